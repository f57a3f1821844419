"""Startup: a fresh interpreter's first load of a 1,000-step runbook, and ``runbook --help``,
``runbook list`` and ``runbook runs``, each timed as the whole process.

Every case runs in a fresh interpreter, ``--repeat`` times; the table shows the median and the
best. The baselines are measured in the same run: ``python -c pass`` for the commands, and for the
load the ``compile()`` of the same source and the import of the same module with decorators that
do nothing (what Python alone pays for that file), so the ratios hold on any machine.

Bytecode: an installed wheel has its ``.pyc`` files; a checkout may not (some machines set
``PYTHONDONTWRITEBYTECODE``). ``cached`` gives the interpreters a private pycache (warmed by one
run per case, not timed), ``compiled`` compiles every module every time. Both are measured.

    .venv/bin/python bench/startup.py                 # both modes, 9 runs per case
    .venv/bin/python bench/startup.py --mode cached --repeat 15
    .venv/bin/python bench/startup.py --root /tmp/old # import runbook from another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import write_runbook

STEPS = 1000

# Put in front of every case's code by ``--root``: runbook (and the plugins) imported from there,
# ahead of the editable installs' finders. Each case prints where runbook came from, checked.
PRELUDE = """
import importlib.machinery as _m, sys as _s
class _Root:
    roots = {roots!r}
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in cls.roots:
            return _m.PathFinder.find_spec(name, path if "." in name else [cls.roots[top]])
        return None
_s.meta_path.insert(0, _Root)
import runbook as _r
assert _r.__file__.startswith({roots[runbook]!r}), _r.__file__
"""

LOAD = """
import time
t0 = time.perf_counter()
from runbook import load
t1 = time.perf_counter()
load({path!r})
t2 = time.perf_counter()
print((t1 - t0) * 1000, (t2 - t1) * 1000)
"""

COMPILE = """
import time
source = open({path!r}).read()
t0 = time.perf_counter()
compile(source, {path!r}, "exec")
print((time.perf_counter() - t0) * 1000)
"""

# The same module with ``runbook`` replaced by decorators that return the function: what
# importing that file costs Python itself (compile, or read the .pyc, and run 1,000 defs).
BARE = """
import sys, time, types, importlib.util
fake = types.ModuleType("runbook")
fake.step = lambda f=None, **k: f if f is not None else (lambda g: g)
sys.modules["runbook"] = fake
spec = importlib.util.spec_from_file_location("bare_module", {path!r})
module = importlib.util.module_from_spec(spec)
t0 = time.perf_counter()
spec.loader.exec_module(module)
print((time.perf_counter() - t0) * 1000)
"""

CLI = """
import sys
sys.argv = ["runbook", *{args!r}]
from runbook.cli import main
main()
"""


def run(code: str, env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Wall and CPU (user + system) seconds of one fresh interpreter running ``code``, and what
    it printed. The CPU time is what to compare on a machine other work keeps busy: the wall
    time there includes waiting for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise SystemExit(f"bench case failed ({out.returncode}):\n{code}\n{out.stderr}")
    return elapsed, cpu, out.stdout


def environment(mode: str, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if mode == "cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("RUNBOOK_TRACE_HOOKS", None)
    return env


def project(folder: Path) -> Path:
    """A project with a run store holding a few runs, for ``runbook runs``."""
    root = folder / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.runbook]\nstore = "sqlite:///.runbook/runs.db"\n')
    (root / "hello.py").write_text(
        "from runbook import step\n\n@step\ndef hello():\n    return 'hi'\n"
    )
    for _ in range(3):
        subprocess.run(
            [sys.executable, "-c", CLI.format(args=["exec", "hello.py", "--yes"])],
            cwd=root,
            check=True,
            capture_output=True,
        )
    return root


def measure(cases: dict[str, str], env: dict[str, str], cwd: Path, repeat: int) -> dict:
    """Each case ``repeat`` times, interleaved (case 1, case 2, ..., case 1, ...) so a burst of
    load on the machine hits all of them alike."""
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    printed: dict[str, list[list[float]]] = {name: [] for name in cases}
    for code in cases.values():  # warm-up: writes the .pyc files in "cached" mode
        run(code, env, cwd)
    for _ in range(repeat):
        for name, code in cases.items():
            wall, cpu, out = run(code, env, cwd)
            walls[name].append(wall * 1000)
            cpus[name].append(cpu * 1000)
            timed_inside = not name.startswith(("runbook ", "python "))
            numbers = [float(x) for x in out.split()] if timed_inside else []
            printed[name].append(numbers)
    return {"wall": walls, "cpu": cpus, "printed": printed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--mode", choices=("cached", "compiled", "both"), default="both")
    parser.add_argument("--root", type=Path, help="import runbook from this checkout instead")
    args = parser.parse_args()
    prelude = ""
    if args.root:
        root = args.root.resolve()
        roots = {"runbook": str(root)}  # each package's parent folder
        for plugin in sorted((root / "plugins").glob("*/runbook_*")):
            roots[plugin.name] = str(plugin.parent)
        prelude = PRELUDE.format(roots=roots)
    modes = ("cached", "compiled") if args.mode == "both" else (args.mode,)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_runbook(folder, STEPS, "linear", "sync")
        proj = project(folder)
        cases = {
            "python -c pass": "pass",
            "compile() of the runbook": COMPILE.format(path=str(path)),
            "import with no-op decorators": BARE.format(path=str(path)),
            "load 1,000 steps": prelude + LOAD.format(path=str(path)),
            "runbook --help": prelude + CLI.format(args=["--help"]),
            "runbook list": prelude + CLI.format(args=["list", str(path)]),
            "runbook runs": prelude + CLI.format(args=["runs"]),
        }
        for mode in modes:
            result = measure(cases, environment(mode, folder / "pycache"), proj, args.repeat)
            base = statistics.median(result["wall"]["python -c pass"])
            base_cpu = statistics.median(result["cpu"]["python -c pass"])
            for name, walls in result["wall"].items():
                cpus = result["cpu"][name]
                row = {
                    "mode": mode,
                    "case": name,
                    "wall_ms": round(statistics.median(walls), 1),
                    "best_wall_ms": round(min(walls), 1),
                    "minus_python_ms": round(statistics.median(walls) - base, 1),
                    "cpu_ms": round(statistics.median(cpus), 1),
                    "cpu_minus_python_ms": round(statistics.median(cpus) - base_cpu, 1),
                }
                numbers = result["printed"][name]
                if name.startswith("load"):
                    row["import_runbook_ms"] = round(statistics.median(n[0] for n in numbers), 1)
                    row["in_process_ms"] = round(statistics.median(n[1] for n in numbers), 1)
                    row["best_in_process_ms"] = round(min(n[1] for n in numbers), 1)
                elif name.startswith(("compile", "import with")):
                    row["in_process_ms"] = round(statistics.median(n[0] for n in numbers), 1)
                    row["best_in_process_ms"] = round(min(n[0] for n in numbers), 1)
                rows.append(row)
    header = (
        f"{'mode':<9} {'case':<30} {'wall ms':>8} {'best':>7} {'-python':>8} {'cpu ms':>7} "
        f"{'-python':>8} {'in-process ms':>14} {'best':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        inproc = r.get("in_process_ms", "")
        best = r.get("best_in_process_ms", "")
        print(
            f"{r['mode']:<9} {r['case']:<30} {r['wall_ms']:>8} {r['best_wall_ms']:>7} "
            f"{r['minus_python_ms']:>8} {r['cpu_ms']:>7} {r['cpu_minus_python_ms']:>8} "
            f"{inproc!s:>14} {best!s:>7}"
        )
    targets = {}
    for mode in modes:
        by = {r["case"]: r for r in rows if r["mode"] == mode}
        targets[mode] = {
            "load_le_50ms": by["load 1,000 steps"]["in_process_ms"] <= 50,
            "help_le_150ms_wall": by["runbook --help"]["wall_ms"] <= 150,
            "help_le_150ms_cpu": by["runbook --help"]["cpu_ms"] <= 150,
        }
    print(
        json.dumps(
            {
                "bench": "startup",
                "python": sys.version.split()[0],
                "steps": STEPS,
                "root": str(args.root) if args.root else None,
                "rows": rows,
                "targets": targets,
            }
        )
    )


if __name__ == "__main__":
    main()
