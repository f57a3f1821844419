"""A process killed inside a fan-out's grouped start (runbook.grouping): every branch is either
not started (no ``step_started`` in the trail, no effect) or found running by ``resume`` (in the
store, or in the trail that leads it: runbook.trail), which audits ``step_interrupted`` for it;
nothing acknowledged is lost and no branch runs twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runbook import Runner

BRANCHES = [f"b{i}" for i in range(5)]

FAN = (
    textwrap.dedent(
        """
        from pathlib import Path
        from runbook import step

        LOG = Path(__file__).with_name("effects.log")

        def mark(text):
            with LOG.open("a") as f:
                f.write(text + "\\n")

        @step
        async def root():
            mark("root")
            return 0
        """
    )
    + "".join(
        f"\n@step\nasync def {name}(root):\n    mark({name!r})\n    return {i}\n"
        for i, name in enumerate(BRANCHES)
    )
    + f"\n@step(after={BRANCHES!r})\nasync def sink():\n    mark('sink')\n"
)

# Each kill point: SIGKILL, no cleanup, at one moment of the grouped start of the five branches.
# The JSONL trail leads (runbook.trail): root's held outcome and the five starts are ONE append,
# then ONE store commit (rows, witness), then the branches' code.
KILLERS = {
    # Before that append: nothing of the transition is anywhere.
    "before the append": """
        real = jsonl.JsonlSink.append_many
        def append_many(self, events):
            if any(e.kind == "step_started" and e.step == "b0" for e in events):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, events)
        jsonl.JsonlSink.append_many = append_many
    """,
    # After the append (root's outcome and the five starts synced), before the commit.
    "after the append": """
        real = jsonl.JsonlSink.append_many
        def append_many(self, events):
            out = real(self, events)
            if any(e.kind == "step_succeeded" and e.step == "root" for e in events):
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        jsonl.JsonlSink.append_many = append_many
    """,
    # Inside the one transaction that holds root's outcome and the five starts.
    "inside the commit": """
        from runbook.store import sqlite as store_sqlite
        real = store_sqlite.SqliteStore.save_steps
        def save_steps(self, steps):
            real(self, steps)  # the transition's rows, written, not committed
            if any(step.name == "b2" and step.status == "running" for step in steps):
                os.kill(os.getpid(), signal.SIGKILL)
        store_sqlite.SqliteStore.save_steps = save_steps
    """,
    # After the commit (all five running), before any branch's code.
    "after the commit": """
        from runbook import media
        real = media.Media.commit
        def commit(self, records, *args, **kwargs):
            out = real(self, records, *args, **kwargs)
            if any(r.name == "b2" and r.status == "running" for r in records):
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        media.Media.commit = commit
    """,
}

DRIVER = """
import os, signal, sys
from runbook import Runner
from runbook.audit import jsonl
{killer}
Runner(store=sys.argv[2], audit=["jsonl://" + sys.argv[3]], locks=None, actor="alice").run(
    sys.argv[1]
)
"""

# What each kill leaves: (root's outcome and the starts in the trail, root succeeded in the store,
# the branches' rows), and what resume must find running.
LEFT = {
    "before the append": (False, False, {None, "pending"}),
    "after the append": (True, False, {None, "pending"}),
    "inside the commit": (True, False, {None, "pending"}),
    "after the commit": (True, True, {"running"}),
}


@pytest.mark.parametrize("where", list(KILLERS))
def test_a_kill_inside_a_grouped_start_leaves_each_branch_unstarted_or_interrupted(
    tmp_path: Path, where: str
) -> None:
    rb = tmp_path / "fan.py"
    rb.write_text(FAN)
    store, audit = f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "audit.jsonl"
    driver = DRIVER.format(killer=textwrap.dedent(KILLERS[where]))
    proc = subprocess.run(
        [sys.executable, "-c", driver, str(rb), store, str(audit)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    log = tmp_path / "effects.log"
    assert log.read_text().split() == ["root"]  # no branch's effect began

    runner = Runner(store=store, audit=[f"jsonl://{audit}"], locks=None, actor="bob")
    (run,) = runner.store.list_runs()
    steps = runner.store.get_steps(run.run_id)
    (sink,) = runner.sinks
    trail = [(e.kind, e.step) for e in sink.events()]
    in_trail, root_done, branch_rows = LEFT[where]
    started = {step for kind, step in trail if kind == "step_started" and step in BRANCHES}
    assert started == (set(BRANCHES) if in_trail else set())  # all five, or none: one append
    assert (("step_succeeded", "root") in trail) is in_trail
    assert steps["root"].status == ("succeeded" if root_done else "running")
    assert {steps[b].status if b in steps else None for b in BRANCHES} <= branch_rows

    result = runner.resume(run.run_id, retry_interrupted=True)
    assert result.status == "succeeded", result.error
    effects = log.read_text().split()
    for name in [*BRANCHES, "sink"]:
        assert effects.count(name) == 1, effects  # no branch ran twice
    # root's outcome had not reached the store: found running, retried (the operator's choice).
    assert effects.count("root") == (1 if root_done else 2)
    events = list(sink.events())
    interrupted = {e.step for e in events if e.kind == "step_interrupted"}
    # Found running: in the store, or started in the trail whose row the store lacks.
    found_running = {n for n, r in steps.items() if r.status == "running"} | started
    assert interrupted == found_running  # each one found running was decided, audited
    for i, event in enumerate(events):  # every step_started has an outcome or an interruption
        if event.kind == "step_started":
            later = [(e.kind, e.step) for e in events[i + 1 :] if e.step == event.step]
            assert later and later[0][0] != "step_started", (event.step, later)
    assert sink.verify().ok
