"""Collection: ``load()`` of a 1,000-step runbook in a process where runbook is already imported.

That is what a long-lived process, the pytest plugin, the CLI after its imports, or any second
load pays: compiling (or reading the ``.pyc`` of) the module, running its decorators, reading
every step's parameters, checking the DAG, and the plugin manager asked for resource names. The
first load in a fresh interpreter also pays runbook's own imports: ``bench/startup.py``.

Baselines measured in the same run: ``compile()`` of the same source, and the import of the same
module with decorators that do nothing (what Python alone pays for that file).

    .venv/bin/python bench/collect.py              # 1,000 steps, best of 15
    .venv/bin/python bench/collect.py --n 10000 --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import write_runbook

from runbook import load
from runbook.plugins import Plugins


def best_ms(repeat: int, fn: Callable[[int], Any]) -> tuple[float, float, float]:
    """(best wall, median wall, best CPU) milliseconds of ``fn(i)`` over ``repeat`` calls.

    The CPU time (this process's) is what to compare on a machine that other work keeps busy:
    wall time there includes waiting for a core."""
    walls, cpus = [], []
    for i in range(repeat):
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        fn(i)
        walls.append((time.perf_counter() - start) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    walls.sort()
    return walls[0], walls[len(walls) // 2], min(cpus)


def bare_import(path: Path) -> None:
    """The module imported with ``step`` as a decorator that returns the function unchanged."""
    fake = types.ModuleType("runbook")
    fake.step = lambda f=None, **k: f if f is not None else (lambda g: g)  # type: ignore[attr-defined]
    real, sys.modules["runbook"] = sys.modules["runbook"], fake
    try:
        spec = importlib.util.spec_from_file_location(f"bare_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        sys.modules["runbook"] = real


def bytecode(mode: str, cache: Path) -> None:
    """``cached``: .pyc files written and read (in ``cache``); ``compiled``: never any."""
    sys.dont_write_bytecode = mode == "compiled"
    sys.pycache_prefix = str(cache / mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pyproject.toml").touch()  # the runbookconf.py search stops here
        path = write_runbook(folder, args.n, "linear", "sync")
        source = path.read_text()
        plugins = Plugins()
        load(path)  # first load: runbook's and the plugins' imports, not measured here
        for mode in ("cached", "compiled"):
            bytecode(mode, folder)
            if mode == "cached":
                load(path)  # writes the .pyc
            # A copy per call in "compiled" mode: nothing cached anywhere.
            copies = [path] * args.repeat
            if mode == "compiled":
                copies = [folder / f"copy{i}_{path.name}" for i in range(args.repeat)]
                for copy in copies:
                    shutil.copy(path, copy)
            cases: dict[str, Callable[[int], Any]] = {
                "compile() of the source": lambda i: compile(source, str(path), "exec"),
                "import, no-op decorators": lambda i, c=copies: bare_import(c[i]),
                "load()": lambda i, c=copies: load(c[i]),
                "load(plugins=given)": lambda i, c=copies: load(c[i], plugins=plugins),
            }
            for name, fn in cases.items():
                if mode == "cached" and name.startswith("compile"):
                    continue
                best, median, cpu = best_ms(args.repeat, fn)
                rows.append(
                    {
                        "mode": mode,
                        "case": name,
                        "n": args.n,
                        "best_ms": round(best, 2),
                        "median_ms": round(median, 2),
                        "cpu_ms": round(cpu, 2),
                    }
                )
    floor = {r["mode"]: r["cpu_ms"] for r in rows if r["case"].startswith("import, no-op")}
    for r in rows:
        r["cpu_x_bare_import"] = round(r["cpu_ms"] / floor[r["mode"]], 1)
    header = (
        f"{'mode':<9} {'case':<26} {'N':>6} {'best ms':>8} {'median':>8} {'cpu ms':>8} "
        f"{'cpu x bare':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['mode']:<9} {r['case']:<26} {r['n']:>6} {r['best_ms']:>8} "
            f"{r['median_ms']:>8} {r['cpu_ms']:>8} {r['cpu_x_bare_import']:>10}"
        )
    by = {(r["mode"], r["case"]): r for r in rows}
    targets = {m: by[(m, "load()")]["best_ms"] <= 50 for m in ("cached", "compiled")}
    print(
        json.dumps(
            {
                "bench": "collect",
                "python": sys.version.split()[0],
                "rows": rows,
                "load_le_50ms": targets,
            }
        )
    )


if __name__ == "__main__":
    main()
