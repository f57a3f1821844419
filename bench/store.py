"""Durable-run and audit overhead per step: SQLite store, JSONL/SQLite audit, beside in-memory.

Also: 100 concurrent runs of a 10-step runbook in one process, against the time one run's steps
take times 10 (the issue's yardstick), all measured in the same process.

    .venv/bin/python bench/store.py             # N = 1000 and 10000
    .venv/bin/python bench/store.py --n 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import write_runbook

from runbook import Runner, load

STEP_SECONDS = 0.01  # the 10-step runbook's steps each "work" this long (async sleep)


def timed(runner: Runner, rb: object) -> float:
    start = time.perf_counter()
    result = runner.run(rb)
    elapsed = time.perf_counter() - start
    assert result.status == "succeeded", result.error
    return elapsed


def per_step(folder: Path, n: int) -> list[dict[str, object]]:
    rb = load(write_runbook(folder, n, "linear", "async"))
    db = folder / f"runs-{n}.db"
    configs = {
        "memory (no store, no audit)": dict(store=None, audit=()),
        "memory store + memory audit": dict(store="memory://", audit=("memory://",)),
        "no store + jsonl audit (fsync)": dict(
            store=None, audit=(f"jsonl://{folder}/only-{n}.jsonl",)
        ),
        "no store + sqlite audit": dict(store=None, audit=(f"sqlite:///{folder}/only-{n}.db",)),
        "sqlite store": dict(store=f"sqlite:///{db}", audit=()),
        "sqlite store + sqlite audit": dict(store=f"sqlite:///{db}", audit=(f"sqlite:///{db}",)),
        "sqlite store + jsonl audit (fsync)": dict(
            store=f"sqlite:///{db}", audit=(f"jsonl://{folder}/audit-{n}.jsonl",)
        ),
    }
    rows = []
    for label, cfg in configs.items():
        runner = Runner(locks=None, notify=(), entry_points=False, actor="bench", **cfg)
        seconds = timed(runner, rb)
        rows.append(
            {
                "n": n,
                "config": label,
                "per_step_us": round(seconds / n * 1e6, 1),
                "total_s": round(seconds, 3),
            }
        )
    return rows


def concurrent(folder: Path, runs: int) -> dict[str, object]:
    path = folder / "ten_steps.py"
    body = ["import asyncio", "from runbook import step", ""]
    for i in range(10):
        args = f"s{i - 1}" if i else ""
        body += [
            "@step",
            f"async def s{i}({args}):",
            f"    await asyncio.sleep({STEP_SECONDS})",
            "    return None",
            "",
        ]
    path.write_text("\n".join(body))
    rb = load(path)
    db = folder / "concurrent.db"
    runner = Runner(
        store=f"sqlite:///{db}",
        audit=(f"sqlite:///{db}",),
        locks=None,
        notify=(),
        entry_points=False,
        actor="bench",
    )
    one = timed(runner, rb)

    async def many() -> list[object]:
        return list(await asyncio.gather(*(runner.arun(rb) for _ in range(runs))))

    start = time.perf_counter()
    results = asyncio.run(many())
    elapsed = time.perf_counter() - start
    assert all(r.status == "succeeded" for r in results)  # type: ignore[attr-defined]
    yardstick = 10 * STEP_SECONDS * 10  # one run's steps (10 x 10 ms) times 10
    return {
        "runs": runs,
        "one_run_s": round(one, 3),
        "all_runs_s": round(elapsed, 3),
        "yardstick_s": yardstick,
        "ratio_to_yardstick": round(elapsed / yardstick, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, action="append")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = [row for n in (args.n or [1000, 10000]) for row in per_step(folder, n)]
        conc = concurrent(folder, args.runs)
    width = max(len(str(r["config"])) for r in rows)
    print(f"{'N':>6}  {'config':<{width}}  {'us/step':>9}  {'total s':>8}")
    for r in rows:
        print(f"{r['n']:>6}  {r['config']:<{width}}  {r['per_step_us']:>9}  {r['total_s']:>8}")
    print(
        f"\n{conc['runs']} concurrent runs of a 10-step runbook (sqlite store + audit): "
        f"{conc['all_runs_s']} s; one run {conc['one_run_s']} s; "
        f"yardstick (one run's steps x 10) {conc['yardstick_s']} s; "
        f"ratio {conc['ratio_to_yardstick']}"
    )
    print(json.dumps({"bench": "store", "rows": rows, "concurrent": conc}))


if __name__ == "__main__":
    main()
