"""Durable runs against the disk's floor: per-step cost, and fsyncs/commits per step COUNTED.

A chain of N no-op steps (default 1,000) with

- SQLite store + SQLite audit in the same file (``durability = "power"`` and ``"process"``),
- SQLite store + JSONL audit (the CLI default), and the same with ``durability = "process"``
  (no fsync, no synced commit: the CPU the CLI default spends per step),
- in-memory store + audit (hash-chained) + locks,
- the engine alone (no store, no audit, no locks),

and a durable fan-out of 100 (98 branches, 8 at a time: each round's outcomes and starts are one
grouped write, runbook.grouping) against a durable chain of 100. The physical floors are measured in
the same run: one ``write+fsync`` of a small line, one SQLite WAL commit with ``synchronous=FULL``
and with ``NORMAL``. Counts come from a separate, untimed pass: ``os.fsync`` is wrapped (the JSONL
sink calls it) and every SQLite connection gets a trace callback that counts ``COMMIT`` (and, from
the connection's ``PRAGMA synchronous``, which of them synced the WAL: with the CLI default the
JSONL trail leads and a step's commit is not synced, runbook/trail.py); so the ratios hold on
any disk. That pass also times each ``fsync`` as the run pays it (``fsync_in_run_us``), printed
beside the back-to-back floor: on a virtual disk the two differ. And one more floor, for the CLI
default's shape rather than the target's: a ``write+fsync`` after as much busy CPU as the
unsynced run spends a step (``floor_fsync_after``), so "its CPU plus one sync" is measured too.

    .venv/bin/python bench/durable.py             # N = 1000, best of 3
    .venv/bin/python bench/durable.py --n 200 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import write_runbook

from runbook import Runner, load

FLOOR_SAMPLES = 300


# -- counting ------------------------------------------------------------------------------------


class Counts:
    def __init__(self) -> None:
        self.fsyncs = 0
        self.commits = 0
        self.synced = 0  # commits made with synchronous=FULL: each one syncs the WAL
        self.fsync_seconds: list[float] = []  # each ``os.fsync`` as the run paid it


@contextmanager
def counting() -> Iterator[Counts]:
    """Count ``os.fsync`` calls and SQLite ``COMMIT`` statements while the block runs, and which
    commits synced the WAL (their connection's ``PRAGMA synchronous`` was FULL)."""
    counts = Counts()
    real_fsync, real_connect = os.fsync, sqlite3.connect

    def fsync(fd: int) -> None:
        counts.fsyncs += 1
        start = time.perf_counter()
        real_fsync(fd)
        counts.fsync_seconds.append(time.perf_counter() - start)

    def tracer() -> Callable[[str], None]:
        level = ["FULL"]  # SQLite's default in WAL mode is FULL unless the pragma says otherwise

        def trace(statement: str) -> None:
            text = " ".join(statement.split()).upper()
            if text.startswith("PRAGMA SYNCHRONOUS"):
                level[0] = text.partition("=")[2].strip() or level[0]
            elif text.startswith(("COMMIT", "END")):
                counts.commits += 1
                counts.synced += level[0] in ("FULL", "2", "EXTRA", "3")

        return trace

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(tracer())
        return conn

    os.fsync, sqlite3.connect = fsync, connect  # type: ignore[assignment]
    try:
        yield counts
    finally:
        os.fsync, sqlite3.connect = real_fsync, real_connect  # type: ignore[assignment]


# -- floors --------------------------------------------------------------------------------------


def floor_fsync(folder: Path, samples: int = FLOOR_SAMPLES) -> float:
    """Seconds for one append of a ~600-byte line plus ``fsync`` (what an audit event costs)."""
    line = b"x" * 600 + b"\n"
    fd = os.open(folder / "floor.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    return statistics.median(times)


def floor_fsync_after(folder: Path, busy_us: float, samples: int = FLOOR_SAMPLES) -> float:
    """Seconds for one ``write+fsync`` as ``floor_fsync``'s, each after ``busy_us`` of CPU work.

    A program pays its sync after doing something, not back to back; on this VM the same sync
    costs 1.2-1.6x more after as little as 25 us of CPU. So a run's floor is its CPU plus this,
    not its CPU plus the bare floor. Only the sync is timed, not the busy wait."""
    line = b"x" * 600 + b"\n"
    fd = os.open(folder / "floor-after.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    clock = time.perf_counter
    try:
        times = []
        for _ in range(samples):
            until = clock() + busy_us / 1e6
            while clock() < until:
                pass
            start = clock()
            os.write(fd, line)
            os.fsync(fd)
            times.append(clock() - start)
    finally:
        os.close(fd)
    return statistics.median(times)


def floor_commit(folder: Path, synchronous: str, samples: int = FLOOR_SAMPLES) -> float:
    """Seconds for one WAL commit of one small row under ``synchronous``."""
    path = folder / f"floor-{synchronous}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (body) VALUES (?)", ("x" * 600,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return statistics.median(times)


def measure_floors(folder: Path, tag: int) -> dict[str, float]:
    sub = folder / f"floors-{tag}"
    sub.mkdir()
    return {
        "write_fsync_us": round(floor_fsync(sub) * 1e6, 1),
        "sqlite_full_commit_us": round(floor_commit(sub, "FULL") * 1e6, 1),
        "sqlite_normal_commit_us": round(floor_commit(sub, "NORMAL") * 1e6, 1),
    }


# -- cases ---------------------------------------------------------------------------------------


def _durability_supported() -> bool:
    import inspect

    return "durability" in inspect.signature(Runner.__init__).parameters


def cases(folder: Path) -> dict[str, Callable[[str], dict[str, Any]]]:
    """Label -> a function of a fresh file tag giving the Runner's keyword arguments."""

    def sqlite_sqlite(durability: str) -> Callable[[str], dict[str, Any]]:
        def make(tag: str) -> dict[str, Any]:
            db = folder / f"{tag}.db"
            extra = {"durability": durability} if _durability_supported() else {}
            return dict(store=f"sqlite:///{db}", audit=(f"sqlite:///{db}",), locks=None, **extra)

        return make

    def sqlite_jsonl(tag: str, **extra: Any) -> dict[str, Any]:
        return dict(
            store=f"sqlite:///{folder}/{tag}.db",
            audit=(f"jsonl://{folder}/{tag}.jsonl",),
            locks=None,
            **extra,
        )

    out: dict[str, Callable[[str], dict[str, Any]]] = {
        "sqlite store + sqlite audit (power)": sqlite_sqlite("power"),
    }
    if _durability_supported():
        out["sqlite store + sqlite audit (process)"] = sqlite_sqlite("process")
    out["sqlite store + jsonl audit (CLI default)"] = sqlite_jsonl
    if _durability_supported():  # the same writes, nothing synced: what the CLI default's CPU costs
        out["sqlite store + jsonl audit (process)"] = lambda tag: sqlite_jsonl(
            tag, durability="process"
        )
    out["memory store + audit + locks"] = lambda tag: dict(
        store="memory://", audit=("memory://",), locks="memory://"
    )
    out["engine alone"] = lambda tag: dict(store=None, audit=(), locks=None)
    return out


def run_once(rb: Any, kwargs: dict[str, Any]) -> float:
    runner = Runner(notify=(), entry_points=False, actor="bench", max_parallel=8, **kwargs)
    runner.store  # noqa: B018 - open providers outside the timed region
    runner.sinks  # noqa: B018
    start = time.perf_counter()
    result = runner.run(rb)
    elapsed = time.perf_counter() - start
    assert result.status == "succeeded", result.error
    return elapsed


def measure(
    rb: Any, steps: int, make: Callable[[str], dict[str, Any]], tag: str, repeat: int, folder: Path
) -> dict[str, Any]:
    """Best time per step, and its ratios to the floors measured right before and right after
    each timed run (the disk's speed drifts with other processes' load: a floor taken minutes
    apart says little). The ratio kept is the median over the runs."""
    times, x_full, x_fsync = [], [], []
    for i in range(repeat):
        before = quick_floors(folder, f"{tag}-b{i}")
        seconds = run_once(rb, make(f"{tag}-t{i}"))
        after = quick_floors(folder, f"{tag}-a{i}")
        per_step = seconds / steps * 1e6
        times.append(per_step)
        x_full.append(per_step / ((before[0] + after[0]) / 2))
        x_fsync.append(per_step / ((before[1] + after[1]) / 2))
    with counting() as counts:
        run_once(rb, make(f"{tag}-count"))
    return {
        "per_step_us": round(min(times), 1),
        "x_full_commit": round(statistics.median(x_full), 2),
        "x_write_fsync": round(statistics.median(x_fsync), 2),
        "fsyncs_per_step": round(counts.fsyncs / steps, 2),
        "commits_per_step": round(counts.commits / steps, 2),
        "synced_commits_per_step": round(counts.synced / steps, 2),
        # What one fsync cost inside the run (timed in the counting pass): against the floor,
        # what the disk charges for the run's other writes, not the code's CPU.
        "fsync_in_run_us": round(statistics.median(counts.fsync_seconds) * 1e6, 1)
        if counts.fsync_seconds
        else None,
    }


def paired(
    rb: Any,
    steps: int,
    memory: Callable[[str], dict[str, Any]],
    engine: Callable[[str], dict[str, Any]],
    pairs: int,
) -> dict[str, float]:
    """Memory against the engine alone, in interleaved pairs with nothing else between them
    (no floors, no disk): both are CPU only, so a pair sees the same load, and the ratio kept
    is the median of the pairs' ratios. The per-step times are each case's best."""
    mem, eng, ratios = [], [], []
    for i in range(pairs):
        m = run_once(rb, memory(f"pm{i}")) / steps * 1e6
        e = run_once(rb, engine(f"pe{i}")) / steps * 1e6
        mem.append(m)
        eng.append(e)
        ratios.append(m / e)
    return {
        "pairs": pairs,
        "memory_us": round(min(mem), 1),
        "engine_us": round(min(eng), 1),
        "ratio": round(statistics.median(ratios), 2),
    }


def quick_floors(folder: Path, tag: str) -> tuple[float, float]:
    """(one FULL commit, one write+fsync) in microseconds: medians of 50, here and now."""
    sub = folder / f"q-{tag}"
    sub.mkdir()
    return floor_commit(sub, "FULL", 50) * 1e6, floor_fsync(sub, 50) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="steps in the chain (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (best kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runbook-bench-durable-", dir=".") as tmp:
        folder = Path(tmp)
        samples: list[dict[str, float]] = [measure_floors(folder, 0)]
        chain = load(write_runbook(folder, args.n, "linear", "async"))
        rows: dict[str, dict[str, Any]] = {}
        for i, (label, make) in enumerate(cases(folder).items()):
            rows[label] = measure(chain, args.n, make, f"c{i}", args.repeat, folder)
        durable = cases(folder)
        pair = paired(
            chain,
            args.n,
            durable["memory store + audit + locks"],
            durable["engine alone"],
            max(15, args.repeat),
        )
        samples.append(measure_floors(folder, 1))
        chain100 = load(write_runbook(folder, 100, "linear", "async"))
        fan100 = load(write_runbook(folder, 100, "fan", "async"))
        shapes: dict[str, dict[str, Any]] = {}
        for label in (
            "sqlite store + sqlite audit (power)",
            "sqlite store + jsonl audit (CLI default)",
        ):
            for shape, rb in (("chain of 100", chain100), ("fan-out of 100", fan100)):
                shapes[f"{label}, {shape}"] = measure(
                    rb, 100, durable[label], f"s{len(shapes)}", max(args.repeat, 3), folder
                )
        samples.append(measure_floors(folder, 2))
        unsynced = rows.get("sqlite store + jsonl audit (process)")
        after_cpu = None
        if unsynced is not None:  # one sync after as much CPU as the CLI default spends a step
            sub = folder / "after-cpu"
            sub.mkdir()
            after_cpu = round(floor_fsync_after(sub, unsynced["per_step_us"]) * 1e6, 1)
        # The disk's floor is the fastest of three measurements spread over the run (before,
        # between and after the cases): noise from other processes only ever slows it down, so
        # this keeps the ratios conservative.
        floors = {key: min(sample[key] for sample in samples) for key in samples[0]}
    full, fsync = floors["sqlite_full_commit_us"], floors["write_fsync_us"]
    ss = rows["sqlite store + sqlite audit (power)"]
    sj = rows["sqlite store + jsonl audit (CLI default)"]
    fan_ss = shapes["sqlite store + sqlite audit (power), fan-out of 100"]
    chain_ss = shapes["sqlite store + sqlite audit (power), chain of 100"]
    fan_sj = shapes["sqlite store + jsonl audit (CLI default), fan-out of 100"]
    chain_sj = shapes["sqlite store + jsonl audit (CLI default), chain of 100"]
    targets = {
        "sqlite+sqlite commits/step <= 2": ss["commits_per_step"] <= 2,
        "sqlite+sqlite <= 2.5x FULL commit": ss["x_full_commit"] <= 2.5,
        "sqlite+jsonl <= 3x write+fsync": sj["x_write_fsync"] <= 3,
        "memory <= 2x engine alone": pair["ratio"] <= 2,
        "fan-out 100 <= 0.5x chain 100 (sqlite+sqlite)": fan_ss["per_step_us"]
        <= 0.5 * chain_ss["per_step_us"],
        "fan-out 100 <= 0.5x chain 100 (sqlite+jsonl)": fan_sj["per_step_us"]
        <= 0.5 * chain_sj["per_step_us"],
    }
    print(
        f"floors: write+fsync {fsync} us, SQLite WAL commit FULL {full} us, "
        f"NORMAL {floors['sqlite_normal_commit_us']} us (fastest of 3 medians of {FLOOR_SAMPLES}: "
        "before, between and after the cases)"
    )
    width = max(len(k) for k in [*rows, *shapes]) + 2
    print(
        f"{'case':<{width}}{'us/step':>10}{'x FULL':>8}{'x fsync':>9}"
        f"{'fsyncs':>8}{'commits':>9}{'synced':>8}   (x: against the floors measured around each"
        " run; synced: commits that synced the WAL)"
    )
    for label, row in [*((f"chain of {args.n}: {k}", v) for k, v in rows.items()), *shapes.items()]:
        print(
            f"{label:<{width}}{row['per_step_us']:>10}{row['x_full_commit']:>8.2f}"
            f"{row['x_write_fsync']:>9.2f}{row['fsyncs_per_step']:>8}"
            f"{row['commits_per_step']:>9}{row['synced_commits_per_step']:>8}"
        )
    cpu = rows.get("sqlite store + jsonl audit (process)", {}).get("per_step_us")
    if sj["fsync_in_run_us"]:
        print(
            f"CLI default: one fsync inside the run costs {sj['fsync_in_run_us']} us (median;"
            f" {sj['fsync_in_run_us'] / fsync:.2f}x the bare write+fsync)"
            + (f", the same writes unsynced {cpu} us per step" if cpu else "")
        )
    program_floor = None
    if cpu and after_cpu:
        # Not the target's floor: what a program doing the step's CPU, then one sync, pays.
        program_floor = round(cpu + after_cpu, 1)
        print(
            f"CLI default against its own shape: one write+fsync after {cpu} us of CPU costs"
            f" {after_cpu} us ({after_cpu / fsync:.2f}x the bare one), so CPU + sync ="
            f" {program_floor} us; the step is {sj['per_step_us'] / program_floor:.2f}x that"
        )
    print(
        f"memory / engine alone: {pair['ratio']:.2f}x (median of {pair['pairs']} interleaved pairs;"
        f" best {pair['memory_us']} vs {pair['engine_us']} us/step)"
    )
    for name, ok in targets.items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")
    print(
        json.dumps(
            {
                "bench": "durable",
                "n": args.n,
                "floors": floors,
                "write_fsync_after_cpu_us": after_cpu,
                "cli_default_cpu_plus_sync_us": program_floor,
                "chain": rows,
                "shapes": shapes,
                "memory_vs_engine": pair,
                "targets": targets,
            }
        )
    )


if __name__ == "__main__":
    main()
