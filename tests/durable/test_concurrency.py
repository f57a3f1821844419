"""Several runs at once, in one process and in several, against one store, corrupt nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runbook import Runner

RUNBOOK = """
import asyncio
from runbook import param, step

n = param("n", type=int)

@step
async def a(params):
    await asyncio.sleep(0)
    return params.n

@step
def b(a):
    return a * 2

@step
async def c(b, ctx):
    ctx.record_change("counter", None, b)
    return b + 1
"""

DRIVER = """
import sys
from runbook import Runner
runner = Runner(store=sys.argv[2], audit=[sys.argv[3]], locks=None, actor=sys.argv[4])
results = runner.run_many([(sys.argv[1], {"n": i}) for i in range(5)])
assert all(r.status == "succeeded" for r in results), [r.error for r in results]
"""


def _runbook(tmp_path: Path) -> Path:
    path = tmp_path / "counter.py"
    path.write_text(RUNBOOK)
    return path


def test_run_many_gives_independent_results(tmp_path: Path) -> None:
    runner = Runner(
        store=f"sqlite:///{tmp_path / 'runs.db'}",
        audit=[f"sqlite:///{tmp_path / 'runs.db'}"],
        locks=None,
        actor="alice",
    )
    results = runner.run_many([(_runbook(tmp_path), {"n": i}) for i in range(10)])
    assert [r.steps["c"].output for r in results] == [i * 2 + 1 for i in range(10)]
    assert len({r.run_id for r in results}) == 10
    stored = runner.store.list_runs(limit=100)
    assert {r.status for r in stored} == {"succeeded"}
    assert len(stored) == 10
    assert runner.sinks[0].verify().ok


def test_processes_sharing_one_store_and_audit_chain(tmp_path: Path) -> None:
    rb = _runbook(tmp_path)
    db = tmp_path / "runs.db"
    store, audit = f"sqlite:///{db}", f"jsonl://{tmp_path / 'audit.jsonl'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(rb), store, audit, f"p{i}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    runner = Runner(store=store, audit=[audit], locks=None)
    runs = runner.store.list_runs(limit=100)
    assert len(runs) == 15
    assert {r.status for r in runs} == {"succeeded"}
    assert {r.actor for r in runs} == {"p0", "p1", "p2"}
    for run in runs:
        steps = runner.store.get_steps(run.run_id)
        assert {s.status for s in steps.values()} == {"succeeded"}
        assert steps["c"].output == run.params["n"] * 2 + 1
    report = runner.sinks[0].verify()
    assert report.ok, str(report)
    events = list(runner.sinks[0].events())
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(e.kind == "run_finished" for e in events) == 15
