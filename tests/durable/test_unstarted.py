"""A step whose start a required audit sink refused never ran its code: once its run has ended, its
store row must say so (``cancelled``, not ``running``), ``runbook show`` must agree, and the ended
run must not be resumable. Rule 1 stores the row as ``running`` before the audit's append, so the
refusal comes after the store already says the step started."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runbook import Runner, load
from runbook.audit.memory import MemorySink
from runbook.cli import cli
from runbook.errors import AuditError, StoreError
from runbook.result import STEP_CANCELLED, STEP_STATUSES

# Statuses a step of an ended run may be stored with: all but running (and pending: never reached
# steps have no row at all).
ENDED = set(STEP_STATUSES) - {"running", "pending"}


class RefusingNth(MemorySink):
    """Refuses the ``n``-th ``step_started`` it is given (a full disk), and only that one.

    Not ``volatile``: it stands for a plugin's sink that keeps its events outside the process,
    so a start reaches it only once the store says running (runbook.media)."""

    volatile = False

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.seen = n, 0

    def append(self, event: Any) -> Any:
        if event.kind == "step_started":
            self.seen += 1
            if self.seen == self.n:
                raise AuditError(f"audit sink refused {event.kind} of {event.step}: disk full")
        return super().append(event)


CHAIN = """
from runbook import rollback, step

DONE = []

@step(reversible=True)
def first():
    DONE.append("first")

@rollback(first)
def unfirst():
    DONE.append("unfirst")

@step(reversible=True)
def second(first):
    DONE.append("second")

@rollback(second)
def unsecond():
    DONE.append("unsecond")

@step
def third(second):
    DONE.append("third")
"""

FAN = """
from runbook import rollback, step

DONE = []

@step(reversible=True)
async def root():
    DONE.append("root")

@rollback(root)
def unroot():
    DONE.append("unroot")
""" + "".join(
    f"\n@step(reversible=True)\nasync def b{i}(root):\n    DONE.append('b{i}')\n"
    f"\n@rollback(b{i})\ndef unb{i}():\n    DONE.append('unb{i}')\n"
    for i in range(4)
)


def cli_run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("source", "n", "unstarted", "done"),
    [
        (CHAIN, 2, ["second"], ["first", "unfirst"]),
        (CHAIN, 1, ["first"], []),
        (FAN, 3, ["b0", "b1", "b2", "b3"], ["root", "unroot"]),
    ],
    ids=["a chain step's start refused", "the first step's start refused", "a grouped start"],
)
def test_a_refused_start_leaves_no_step_running_once_the_run_ended(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    n: int,
    unstarted: list[str],
    done: list[str],
) -> None:
    for var in ("RUNBOOK_STORE", "RUNBOOK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "rb.py"
    path.write_text(source)
    rb = load(path)
    url = f"sqlite:///{tmp_path / 'runbook.db'}"
    sink = RefusingNth(n)
    runner = Runner(store=url, audit=[sink], locks=None)
    result = runner.run(rb)

    assert result.status in ("failed", "rolled_back")
    assert "refused step_started" in (result.error or "")
    assert done == rb.module.DONE  # no refused step's code ran, and none of its rollback
    assert runner.store is not None
    rows = runner.store.get_steps(result.run_id)
    assert runner.store.get_run(result.run_id).status == result.status
    for name, row in rows.items():
        assert row.status in ENDED, (name, row.status)
    for name in unstarted:
        assert rows[name].status == STEP_CANCELLED
        assert "not started" in (rows[name].reason or "")
        assert rows[name].rollback is None  # never undone: it never did anything
        assert result.steps[name].status == STEP_CANCELLED  # the result agrees with the store
    # Every step_started the sink took has an outcome in it (the trail agrees too).
    kinds = [(e.kind, e.step) for e in sink.events()]
    for kind, name in kinds:
        if kind == "step_started":
            assert any(k in ("step_succeeded", "step_failed") and s == name for k, s in kinds)

    shown = cli_run("show", result.run_id, "--store", url, "--json")
    assert shown.exit_code == 0, shown.output
    steps = json.loads(shown.stdout)["steps"]
    for name in unstarted:
        assert steps[name]["status"] == STEP_CANCELLED
    assert all(step["status"] != "running" for step in steps.values())

    resumed = cli_run("resume", result.run_id, "--store", url)
    assert resumed.exit_code == 2
    assert f"has ended ({result.status.replace('_', ' ')})" in resumed.stderr


def test_a_start_refused_by_the_store_leaves_no_step_running_either(tmp_path: Path) -> None:
    """The store refuses the second step's start: no row says it started (none is written for
    it at the end either: the store never held its start, the trail never had it), and the
    result says it never ran."""
    path = tmp_path / "rb.py"
    path.write_text(CHAIN)
    rb = load(path)
    runner = Runner(store=f"memory://unstarted-{uuid.uuid4().hex}", audit=[], locks=None)
    store = runner.store
    assert store is not None
    save_step = store.save_step
    refused: list[str] = []

    def refusing(record: Any) -> None:
        if record.name == "second" and record.status == "running" and not refused:
            refused.append(record.name)
            raise StoreError("run store refused: disk full")
        save_step(record)

    store.save_step = refusing  # type: ignore[method-assign]
    result = runner.run(rb)
    assert refused == ["second"]
    assert result.status == "rolled_back"
    assert result.steps["second"].status == STEP_CANCELLED
    rows = store.get_steps(result.run_id)
    assert "second" not in rows  # never stored as started: nothing to end
    assert all(row.status in ENDED for row in rows.values())
    assert rb.module.DONE == ["first", "unfirst"]


class RefusingNthInProcess(RefusingNth):
    volatile = True  # as memory:// is: a start reaches it with the held outcomes, before the store


def test_a_start_refused_by_a_sink_in_the_process_is_never_stored_or_run(tmp_path: Path) -> None:
    """``memory://`` takes a start before the store does: refused there, the step has no row at
    all (nothing to end), never runs, and what ran before it is undone."""
    path = tmp_path / "rb.py"
    path.write_text(CHAIN)
    rb = load(path)
    sink = RefusingNthInProcess(2)
    runner = Runner(store=f"sqlite:///{tmp_path / 'runbook.db'}", audit=[sink], locks=None)
    result = runner.run(rb)
    assert result.status == "rolled_back"
    assert "refused step_started" in (result.error or "")
    assert rb.module.DONE == ["first", "unfirst"]
    assert runner.store is not None
    rows = runner.store.get_steps(result.run_id)
    assert "second" not in rows
    assert all(row.status in ENDED for row in rows.values())
    assert result.steps["second"].status == STEP_CANCELLED
    kinds = [(e.kind, e.step) for e in sink.events()]
    assert ("step_started", "second") not in kinds


def test_a_start_a_sink_in_the_process_holds_but_the_store_refused_is_ended(
    tmp_path: Path,
) -> None:
    """The store refuses second's start after ``memory://`` took it: the sink says second
    started, so it also says it ended (failed, never ran) by the time the run is over."""
    path = tmp_path / "rb.py"
    path.write_text(CHAIN)
    rb = load(path)
    sink = MemorySink()
    runner = Runner(store=f"memory://unstarted-{uuid.uuid4().hex}", audit=[sink], locks=None)
    store = runner.store
    assert store is not None
    save_step = store.save_step

    def refusing(record: Any) -> None:
        if record.name == "second" and record.status == "running":
            raise StoreError("run store refused: disk full")
        save_step(record)

    store.save_step = refusing  # type: ignore[method-assign]
    result = runner.run(rb)
    assert result.status == "rolled_back"
    assert rb.module.DONE == ["first", "unfirst"]
    kinds = [(e.kind, e.step) for e in sink.events()]
    assert ("step_started", "second") in kinds
    assert kinds.index(("step_failed", "second")) > kinds.index(("step_started", "second"))
    assert "second" in store.get_steps(result.run_id)  # ended: the run leaves no step running
    assert store.get_steps(result.run_id)["second"].status == STEP_CANCELLED
    assert sink.verify().ok
