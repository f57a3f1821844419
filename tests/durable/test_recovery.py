"""Crash recovery at the mechanism (issue 12): the store is seeded with exactly what a process
killed at a given moment leaves behind, then resume/cancel/deny must finish the job correctly.

Seeding the store (instead of killing a process at a lucky moment) makes every crash point
deterministic; tests/e2e/test_chaos.py kills real processes at random moments on top of this.
"""

from __future__ import annotations

import sqlite3
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runbook import Runner
from runbook.errors import AuditError, StoreCorrupt, UsageError
from runbook.store.base import RunRecord, StepRecord

RUNBOOK = """
from pathlib import Path
from runbook import rollback, step

LOG = Path(__file__).with_name("effects.log")


def mark(text):
    with LOG.open("a") as f:
        f.write(text + "\\n")


@step(reversible=True)
def s1():
    mark("s1")
    return 1


@rollback(s1)
def u1(s1):
    mark(f"undo s1 ({s1})")


@step(reversible=True, idempotent=True)
def s2(s1):
    mark("s2")
    return 2


@rollback(s2)
def u2():
    mark("undo s2")


@step(reversible=True)
def s3(s1):
    mark("s3")
    return 3


@rollback(s3)
def u3():
    mark("undo s3")


@step
def s4(s2, s3):
    mark("s4")
    return 4


@step(reversible=True)
def s5(s4):
    mark("s5")
    return 5


@rollback(s5)
def u5():
    mark("undo s5")
"""

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


class Seeded:
    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "pyproject.toml").touch()
        self.path = tmp_path / "seeded.py"
        self.path.write_text(textwrap.dedent(RUNBOOK))
        self.log = tmp_path / "effects.log"
        self.db = tmp_path / "runs.db"
        self.store_url = f"sqlite:///{self.db}"
        self.audit = tmp_path / "audit.jsonl"

    def runner(self, actor: str = "bob", **kw) -> Runner:
        return Runner(
            store=self.store_url,
            audit=[f"jsonl://{self.audit}"],
            locks=f"file://{self.path.parent / 'locks'}",
            actor=actor,
            seed=0,
            entry_points=False,
            **kw,
        )

    def run(self, steps: dict[str, tuple], *, status: str = "running", options=None) -> str:
        """A run as a dead process left it: ``steps`` = name -> (status, seq, rollback, error)."""
        runner = self.runner("alice")
        rb = runner.load(self.path)
        store = runner.store
        store.create_run(
            RunRecord(
                run_id="r-dead",
                runbook_path=str(self.path),
                runbook_sha256=rb.sha256,
                env="dev",
                actor="alice",
                status=status,
                created_at=T0,
                host="gone-host",
                pid=0,
                options=options or {},
            )
        )
        outputs = {"s1": 1, "s2": 2, "s3": 3, "s4": 4, "s5": 5}
        for name, (st, seq, rollback, error) in steps.items():
            store.save_step(
                StepRecord(
                    "r-dead",
                    name,
                    st,
                    outputs[name] if st in ("succeeded", "rolled_back") else None,
                    error,
                    1,
                    T0,
                    None if st == "running" else T0 + timedelta(seconds=1),
                    None if st == "running" else 1.0,
                    None,
                    seq,
                    rollback,
                )
            )
        runner.close()
        return "r-dead"

    def effects(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def events(self, runner: Runner) -> list[tuple[str, str | None]]:
        return [(e.kind, e.step) for e in runner.sinks[0].events()]


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return Seeded(tmp_path)


# A failing run killed after s4 failed and s3 was undone, before s2 and s1 were.
KILLED_IN_ROLLBACK = {
    "s1": ("succeeded", 1, None, None),
    "s3": ("rolled_back", 2, "rolled_back", None),
    "s2": ("succeeded", 3, None, None),
    "s4": ("failed", 4, None, "RuntimeError: boom"),
}


def test_resume_of_a_run_killed_during_rollback_finishes_the_rollback(seeded):
    run_id = seeded.run(KILLED_IN_ROLLBACK, options={"rollback": "failed"})
    with seeded.runner() as runner:
        result = runner.resume(run_id)
    assert result.status == "rolled_back" and result.exit_code == 1
    # The rest of the rollback, in the original order (newest completion first); nothing forward.
    assert seeded.effects() == ["undo s2", "undo s1 (1)"]
    assert result.steps["s5"].status == "pending"
    assert result.steps["s4"].status == "failed"
    assert result.error == "s4: RuntimeError: boom"
    assert {n: s.rollback for n, s in result.steps.items() if s.rollback} == {
        "s1": "rolled_back",
        "s2": "rolled_back",
        "s3": "rolled_back",
    }


def test_the_steps_alone_say_the_run_was_failing_when_the_cause_never_reached_the_store(seeded):
    """Killed after s4's failure was stored, before the rollback cause was: still a rollback."""
    steps = {k: v for k, v in KILLED_IN_ROLLBACK.items() if k != "s3"}
    steps["s3"] = ("succeeded", 2, None, None)
    run_id = seeded.run(steps)
    with seeded.runner() as runner:
        result = runner.resume(run_id)
    assert result.status == "rolled_back"
    assert seeded.effects() == ["undo s2", "undo s3", "undo s1 (1)"]


def test_an_interrupted_rollback_needs_a_decision_unless_its_step_is_idempotent(seeded):
    steps = dict(KILLED_IN_ROLLBACK)
    steps["s1"] = ("succeeded", 1, "running", None)  # killed inside u1
    steps["s2"] = ("rolled_back", 3, "rolled_back", None)
    run_id = seeded.run(steps, options={"rollback": "failed"})
    with seeded.runner() as runner:
        with pytest.raises(UsageError, match="the rollback of s1") as info:
            runner.resume(run_id)
        assert info.value.exit_code == 2
        assert seeded.effects() == []  # nothing ran
        result = runner.resume(run_id, retry_interrupted=True)
        assert result.status == "rolled_back"
        assert seeded.effects() == ["undo s1 (1)"]
        interrupted = [e for e in runner.sinks[0].events() if e.kind == "step_interrupted"]
        assert [(e.step, e.data) for e in interrupted] == [
            ("s1", {"decision": "retry", "attempt": 1, "rollback": True})
        ]


def test_an_idempotent_steps_interrupted_rollback_is_redone_without_asking(seeded):
    steps = dict(KILLED_IN_ROLLBACK)
    steps["s2"] = ("succeeded", 3, "running", None)  # s2 is idempotent: so is its undo
    steps["s1"] = ("succeeded", 1, None, None)
    run_id = seeded.run(steps, options={"rollback": "failed"})
    with seeded.runner() as runner:
        result = runner.resume(run_id)
    assert result.status == "rolled_back"
    assert seeded.effects() == ["undo s2", "undo s1 (1)"]


def test_skip_of_an_interrupted_rollback_is_a_failed_rollback(seeded):
    steps = dict(KILLED_IN_ROLLBACK)
    steps["s1"] = ("succeeded", 1, "running", None)
    run_id = seeded.run(steps, options={"rollback": "failed"})
    with seeded.runner() as runner:
        result = runner.resume(run_id, skip_interrupted=True)
    assert result.status == "rollback_failed" and result.exit_code == 4
    assert "skipped by the operator" in result.steps["s1"].rollback_error
    assert seeded.effects() == ["undo s2"]  # s2 was still to undo; s1 left to a human


def test_a_step_found_running_in_a_failing_run_is_cut_off_not_resumed(seeded):
    """s3 was still running when s2 failed and the process died: resume never goes on."""
    steps = {
        "s1": ("succeeded", 1, None, None),
        "s2": ("failed", 2, None, "RuntimeError: s2 broke"),
        "s3": ("running", None, None, None),
    }
    run_id = seeded.run(steps)
    with seeded.runner() as runner:
        result = runner.resume(run_id)
        events = [(e.kind, e.step, e.data.get("decision")) for e in runner.sinks[0].events()]
    assert result.status == "rolled_back"
    assert result.steps["s3"].status == "cancelled"
    # s3 may have half-happened: its own rollback runs first, then s2's, then s1's.
    assert seeded.effects() == ["undo s3", "undo s2", "undo s1 (1)"]
    assert ("step_interrupted", "s3", "cut off") in events


@pytest.mark.parametrize("action", ["cancel", "deny"])
def test_a_kill_during_cancel_or_deny_resumes_as_the_same_rollback(seeded, action):
    steps = {
        "s1": ("succeeded", 1, None, None),
        "s2": ("succeeded", 2, "rolled_back", None),
        "s3": ("succeeded", 3, "rolled_back", None),
    }
    cause = "cancelled" if action == "cancel" else "failed"
    run_id = seeded.run(steps, options={"rollback": cause})
    with seeded.runner() as runner:
        result = runner.resume(run_id)
    assert result.status == ("cancelled" if action == "cancel" else "rolled_back")
    assert seeded.effects() == ["undo s1 (1)"]


def test_cancel_of_a_dead_run_writes_the_cause_before_undoing(seeded):
    run_id = seeded.run({"s1": ("succeeded", 1, None, None), "s2": ("running", None, None, None)})
    with seeded.runner() as runner:
        result = runner.cancel(run_id)
        assert runner.store.get_run(run_id).options["rollback"] == "cancelled"
    assert result.status == "cancelled"
    assert result.steps["s2"].status == "cancelled"
    assert seeded.effects() == ["undo s2", "undo s1 (1)"]


def test_cancel_of_a_run_with_an_interrupted_rollback_asks_for_resume(seeded):
    steps = dict(KILLED_IN_ROLLBACK)
    steps["s1"] = ("succeeded", 1, "running", None)
    run_id = seeded.run(steps, options={"rollback": "failed"})
    with seeded.runner() as runner, pytest.raises(UsageError, match="runbook resume"):
        runner.cancel(run_id)
    assert seeded.effects() == []


# -- the store cannot be trusted ---------------------------------------------------------------


@pytest.mark.parametrize("column,value", [("status", "suceeded"), ("rollback", "maybe")])
def test_an_unknown_step_state_is_a_corrupt_store_and_nothing_is_modified(seeded, column, value):
    run_id = seeded.run({"s1": ("succeeded", 1, None, None), "s2": ("running", None, None, None)})
    with sqlite3.connect(seeded.db) as conn:
        conn.execute(f"UPDATE steps SET {column} = ? WHERE name = 's1'", (value,))
    before = seeded.db.read_bytes()
    with seeded.runner() as runner:
        for attempt in (
            lambda: runner.resume(run_id, retry_interrupted=True),
            lambda: runner.cancel(run_id),
        ):
            with pytest.raises(StoreCorrupt, match="corrupt") as info:
                attempt()
            assert info.value.exit_code == 2
    assert seeded.effects() == []
    assert seeded.db.read_bytes() == before
    assert not seeded.audit.exists() or seeded.audit.read_text() == ""


def test_a_resume_whose_audit_refuses_its_decisions_undoes_and_stores_nothing(seeded):
    """s2 was running when a failing run's process died; the trail then refuses appends (a
    torn tail). Resume's decision for s2 ("cut off", then undo it) must not be acted on or
    stored before ``step_interrupted`` is audited: it used to undo everything and store s2 as
    cancelled with no event at all, so the trail's ``step_started`` of s2 never had an outcome
    or an interruption after it (the chaos test's invariant)."""
    steps = {
        "s1": ("succeeded", 1, None, None),
        "s3": ("succeeded", 2, None, None),
        "s2": ("running", None, None, None),
    }
    run_id = seeded.run(steps, options={"rollback": "failed"})
    seeded.audit.write_text('{"kind": "step_start')  # a line cut short: every append refused
    with seeded.runner() as runner:
        with pytest.raises(AuditError, match="refuses to append"):
            runner.resume(run_id)
        stored = runner.store.get_steps(run_id)
    assert seeded.effects() == []  # nothing undone
    assert {n: (r.status, r.rollback) for n, r in stored.items()} == {
        n: (st, rb) for n, (st, _, rb, _) in steps.items()
    }
    # The operator repairs the trail as the error says: the next resume decides, audited.
    seeded.audit.write_text("")
    with seeded.runner() as runner:
        result = runner.resume(run_id)
        events = [(e.kind, e.step, e.data.get("decision")) for e in runner.sinks[0].events()]
    assert result.status == "rolled_back"
    assert ("step_interrupted", "s2", "cut off") in events
    assert seeded.effects() == ["undo s2", "undo s3", "undo s1 (1)"]


# -- results after a resume --------------------------------------------------------------------


def test_a_rerun_steps_duration_excludes_the_time_the_process_was_dead(seeded):
    """s2 (idempotent) was started at T0 by a process that died; resumed hours later."""
    run_id = seeded.run({"s1": ("succeeded", 1, None, None), "s2": ("running", None, None, None)})
    with seeded.runner() as runner:
        result = runner.resume(run_id, retry_interrupted=True)
    assert result.status == "succeeded"
    s2 = result.steps["s2"]
    assert s2.started_at > T0 + timedelta(hours=1)
    assert s2.duration is not None and s2.duration < 60


def test_skip_interrupted_of_a_required_step_is_recorded_as_skipped_by_the_operator(seeded):
    run_id = seeded.run({"s1": ("succeeded", 1, None, None), "s3": ("running", None, None, None)})
    with seeded.runner() as runner:
        result = runner.resume(run_id, skip_interrupted=True)
        stored = runner.store.get_steps(run_id)
    assert result.steps["s3"].status == "skipped"
    assert result.steps["s3"].reason == "skipped (operator)"
    assert stored["s3"].status == "skipped" and stored["s3"].reason == "skipped (operator)"
    # Section 1's skip rule: s4 needs s3's output, so it and s5 skip too; nothing says succeeded.
    assert result.steps["s4"].status == "skipped" and result.steps["s4"].reason == "s3 skipped"
    assert result.steps["s5"].status == "skipped"
    assert seeded.effects() == ["s2"]
