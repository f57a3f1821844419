"""Engine overhead: N no-op steps as a linear chain and as a fan-out/fan-in, sync and async.

In-memory, no store, no audit, no locks: this isolates the scheduler. The baseline is a bare
``asyncio.gather`` of N no-op coroutines measured in the same process, so the ratio is meaningful on
any machine.

    .venv/bin/python bench/engine.py            # N = 100, 1000, 10000
    .venv/bin/python bench/engine.py --n 1000   # one size
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook import Runner, load


def write_runbook(folder: Path, n: int, shape: str, kind: str) -> Path:
    """A generated runbook module: ``linear`` s0 -> s1 -> ...; ``fan``: s0 -> (s1..sN-2) -> sink."""
    prefix = "async def" if kind == "async" else "def"
    lines = ["from runbook import step", ""]
    for i in range(n):
        if i == 0:
            args = ""
        elif shape == "linear":
            args = f"s{i - 1}"
        elif i == n - 1:
            args = ""
        else:
            args = "s0"
        deco = "@step"
        if shape == "fan" and i == n - 1 and n > 2:
            deco = f"@step(after=[{', '.join(repr(f's{j}') for j in range(1, n - 1))}])"
        lines += [deco, f"{prefix} s{i}({args}):", "    return None", ""]
    path = folder / f"bench_{shape}_{kind}_{n}.py"
    path.write_text("\n".join(lines))
    return path


def runner() -> Runner:
    return Runner(
        store=None,
        audit=(),
        locks=None,
        notify=(),
        max_parallel=8,
        entry_points=False,
        actor="bench",
    )


async def baseline_threads(n: int) -> float:
    """The floor for sync steps: N sequential hand-offs of a no-op to a worker thread."""
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=8) as pool:
        start = time.perf_counter()
        for _ in range(n):
            await loop.run_in_executor(pool, int)
        return time.perf_counter() - start


async def baseline(n: int) -> float:
    async def noop() -> None:
        return None

    start = time.perf_counter()
    await asyncio.gather(*(noop() for _ in range(n)))
    return time.perf_counter() - start


def measure(path: Path, repeat: int) -> dict[str, float]:
    t0 = time.perf_counter()
    rb = load(path)
    load_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = runner().run(rb)
        best = min(best, time.perf_counter() - start)
        assert result.status == "succeeded", result.error
    gc.collect()
    tracemalloc.start()
    runner().run(rb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"load_s": load_s, "run_s": best, "peak_mb": peak / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, action="append")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = args.n or [100, 1000, 10000]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in sizes:
            base = min(asyncio.run(baseline(n)) for _ in range(args.repeat))
            threads = min(asyncio.run(baseline_threads(n)) for _ in range(args.repeat))
            for shape in ("linear", "fan"):
                for kind in ("async", "sync"):
                    m = measure(write_runbook(folder, n, shape, kind), args.repeat)
                    rows.append(
                        {
                            "n": n,
                            "shape": shape,
                            "kind": kind,
                            "per_step_us": round(m["run_s"] / n * 1e6, 1),
                            "baseline_gather_us": round(base / n * 1e6, 2),
                            "ratio_vs_gather": round(m["run_s"] / base, 1),
                            "baseline_thread_us": round(threads / n * 1e6, 1),
                            "peak_mb": round(m["peak_mb"], 1),
                            "load_s": round(m["load_s"], 3),
                        }
                    )
    header = (
        f"{'N':>6} {'shape':<7} {'kind':<6} {'us/step':>9} {'gather us':>10} "
        f"{'ratio':>7} {'thread us':>10} {'peak MB':>8} {'load s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['n']:>6} {r['shape']:<7} {r['kind']:<6} {r['per_step_us']:>9} "
            f"{r['baseline_gather_us']:>10} {r['ratio_vs_gather']:>7} "
            f"{r['baseline_thread_us']:>10} {r['peak_mb']:>8} "
            f"{r['load_s']:>7}"
        )
    print(json.dumps({"bench": "engine", "python": sys.version.split()[0], "rows": rows}))


if __name__ == "__main__":
    main()
