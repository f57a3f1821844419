"""The run store's WAL checkpoints: inline (SQLite's default) against a thread (walcheckpoint).

N recorded transitions on a SqliteStore (a step's outcome and the next step's start, plus the
trail's witness: one commit each, as a chain writes them with the CLI default) under three
policies, interleaved over several rounds:

- ``inline``: SQLite's automatic checkpoint (every 1,000 pages, in the commit that crosses it),
  what the store did before runbook.store.walcheckpoint;
- ``thread``: the store's default, checkpoints on a thread, every RESET-th finished inline;
- ``thread, no reset``: the thread alone, to show what the writer's own checkpoints are for: the
  WAL is never found fully copied at a transaction's start, so SQLite never restarts it and it
  grows with every commit.

Prints microseconds per transition (best round), the WAL's size at the end (pages, the largest
of the rounds) and the checkpoints made. Then the same two policies in a real run: a chain of
1,000 no-op steps with the CLI default's media (SQLite store, ``jsonl://`` trail), inline against
thread, interleaved: per step (best and median), and the time the run's commits took per step
and the slowest one (what an inline checkpoint costs the step that pays it); then a JSON line.

    .venv/bin/python bench/wal.py                 # N = 5000, durability process, 5 rounds
    .venv/bin/python bench/wal.py --n 20000 --durability power
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import write_runbook

from runbook import Runner, load
from runbook.store import sqlite as sqlite_store
from runbook.store import walcheckpoint
from runbook.store.base import RunRecord, StepRecord
from runbook.store.sqlite import SqliteStore

POLICIES = ("inline", "thread", "thread, no reset")


def policy_of(policy: str) -> tuple[int, int, int]:
    """(EVERY, RESET, HARD) for a policy: "inline" never starts the thread, "no reset" never
    checkpoints on the writer's connection (neither after the thread's, nor at the hard limit)."""
    every, reset, hard = walcheckpoint.EVERY, walcheckpoint.RESET, walcheckpoint.HARD
    if policy == "inline":
        return 10**12, reset, hard
    if policy == "thread, no reset":
        return every, 10**12, 10**12
    return every, reset, hard


def with_policy(policy: str, make: Any) -> Any:
    """``make()`` with the module's constants set for ``policy`` while the store is made."""
    saved = walcheckpoint.EVERY, walcheckpoint.RESET, walcheckpoint.HARD
    walcheckpoint.EVERY, walcheckpoint.RESET, walcheckpoint.HARD = policy_of(policy)
    try:
        return make()
    finally:
        walcheckpoint.EVERY, walcheckpoint.RESET, walcheckpoint.HARD = saved


def one(folder: Path, tag: str, policy: str, n: int, durability: str) -> dict[str, Any]:
    store = with_policy(policy, lambda: SqliteStore(folder / f"{tag}.db", durability=durability))
    now = datetime.now(UTC)
    store.create_run(
        RunRecord(
            run_id="r1", runbook_path="bench.py", runbook_sha256="0" * 64, env="dev",
            actor="bench", status="running",
        )
    )  # fmt: skip
    steps = [
        (
            StepRecord(run_id="r1", name=f"step_{i:06d}", status="succeeded", output=i,
                       attempts=1, started_at=now, finished_at=now, duration=0.0),
            StepRecord(run_id="r1", name=f"step_{i + 1:06d}", status="running", attempts=1,
                       started_at=now),
        )
        for i in range(n)
    ]  # fmt: skip
    start = time.perf_counter()
    for i, pair in enumerate(steps):
        with store.transaction("record a step in", sync=False):
            store.save_steps(pair)
            store.witness_audit("r1", "jsonl://bench", i + 1, "0" * 64)
    seconds = time.perf_counter() - start
    wal = Path(f"{store.path}-wal").stat().st_size // 4096
    checkpoints = store._checkpoints
    row = {
        "us_per_transition": seconds / n * 1e6,
        "wal_pages": wal,
        "thread_checkpoints": checkpoints.done,
        "inline_resets": checkpoints.inline,
    }
    store.close()
    return row


class Commits:
    """Each write transaction's end (its ``COMMIT``, and an inline checkpoint in it), timed."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._real = sqlite_store._Tx.__exit__

    def __enter__(self) -> Commits:
        real, seconds = self._real, self.seconds

        def timed_exit(tx: Any, *exc_info: Any) -> None:
            start = time.perf_counter()
            try:
                real(tx, *exc_info)
            finally:
                seconds.append(time.perf_counter() - start)

        sqlite_store._Tx.__exit__ = timed_exit  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        sqlite_store._Tx.__exit__ = self._real  # type: ignore[method-assign]


def chain(folder: Path, rb: Any, tag: str, policy: str, durability: str) -> dict[str, float]:
    """One run of ``rb`` with the CLI default's media: microseconds per step, and the time its
    commits took (per step, and the slowest one)."""

    def make() -> Runner:
        runner = Runner(
            store=f"sqlite:///{folder}/{tag}.db", audit=(f"jsonl://{folder}/{tag}.jsonl",),
            locks=None, notify=(), entry_points=False, actor="bench", durability=durability,
        )  # fmt: skip
        runner.store  # noqa: B018 - the store (and its checkpointer) made under the policy
        runner.sinks  # noqa: B018
        return runner

    runner = with_policy(policy, make)
    with Commits() as commits:
        start = time.perf_counter()
        result = runner.run(rb)
        seconds = time.perf_counter() - start
    assert result.status == "succeeded", result.error
    return {
        "us_per_step": seconds / 1000 * 1e6,
        "commit_us_per_step": sum(commits.seconds) / 1000 * 1e6,
        "slowest_commit_ms": max(commits.seconds) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="transitions per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--durability", choices=("process", "power"), default="process")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {policy: [] for policy in POLICIES}
    with tempfile.TemporaryDirectory(prefix="runbook-bench-wal-", dir=".") as tmp:
        for r in range(args.rounds):
            for i, policy in enumerate(POLICIES):
                results[policy].append(one(Path(tmp), f"r{r}-{i}", policy, args.n, args.durability))
        rb = load(write_runbook(Path(tmp), 1000, "linear", "async"))
        runs: dict[str, list[dict[str, float]]] = {"inline": [], "thread": []}
        for r in range(args.rounds):
            for policy in runs:
                runs[policy].append(chain(Path(tmp), rb, f"c{r}-{policy}", policy, args.durability))
    rows = {
        policy: {
            "us_per_transition": round(min(x["us_per_transition"] for x in runs), 1),
            "wal_pages": max(x["wal_pages"] for x in runs),
            "thread_checkpoints": runs[-1]["thread_checkpoints"],
            "inline_resets": runs[-1]["inline_resets"],
        }
        for policy, runs in results.items()
    }
    base = rows["inline"]["us_per_transition"]
    print(
        f"{args.n} transitions, durability {args.durability!r}, best of {args.rounds} rounds;"
        f" EVERY={walcheckpoint.EVERY} commits, RESET={walcheckpoint.RESET},"
        f" HARD={walcheckpoint.HARD}"
    )
    print(f"{'policy':<20}{'us/transition':>15}{'x inline':>10}{'WAL pages':>11}"
          f"{'thread ckpts':>14}{'inline resets':>15}")  # fmt: skip
    for policy, row in rows.items():
        print(
            f"{policy:<20}{row['us_per_transition']:>15}"
            f"{row['us_per_transition'] / base:>10.2f}{row['wal_pages']:>11}"
            f"{row['thread_checkpoints']:>14}{row['inline_resets']:>15}"
        )
    chains = {
        policy: {
            "best_us_per_step": round(min(x["us_per_step"] for x in v), 1),
            "median_us_per_step": round(statistics.median(x["us_per_step"] for x in v), 1),
            "median_commit_us_per_step": round(
                statistics.median(x["commit_us_per_step"] for x in v), 1
            ),
            "median_slowest_commit_ms": round(
                statistics.median(x["slowest_commit_ms"] for x in v), 2
            ),
        }
        for policy, v in runs.items()
    }
    print(
        f"chain of 1,000, SQLite store + jsonl trail, {args.durability!r}, {args.rounds} rounds"
        " (medians, except best):"
    )
    print(f"  {'policy':<8}{'best us/step':>14}{'us/step':>10}{'commits us/step':>17}"
          f"{'slowest commit ms':>19}")  # fmt: skip
    for policy, row in chains.items():
        print(
            f"  {policy:<8}{row['best_us_per_step']:>14}{row['median_us_per_step']:>10}"
            f"{row['median_commit_us_per_step']:>17}{row['median_slowest_commit_ms']:>19}"
        )
    print(
        json.dumps(
            {"bench": "wal", "n": args.n, "durability": args.durability, **rows, "chain": chains}
        )
    )


if __name__ == "__main__":
    main()
