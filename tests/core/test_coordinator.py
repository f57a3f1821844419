"""The coordinator's decisions, fed events by hand: nothing runs, nothing is stored, no clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runbook import load
from runbook import result as R
from runbook.coordinator import Coordinator
from runbook.interruptions import (
    CANCELLED,
    CUT_OFF,
    FAILED,
    RERUN,
    RETRY,
    SKIP,
    automatic_decision,
    interrupted,
    rolling_back,
)
from runbook.redact import REDACTED_KEY
from runbook.store.base import StepRecord


@pytest.fixture
def rb(write_runbook):
    path = write_runbook(
        """
        from runbook import rollback, step

        @step(reversible=True, retries=2, backoff=2.0, backoff_max=5.0)
        def a():
            return 1

        @rollback(a)
        def undo_a():
            pass

        @step(reversible=True)
        def b(a):
            return a + 1

        @rollback(b)
        def undo_b():
            pass

        @step
        def c(a):
            return a

        @step(required=False)
        def optional(b):
            return b

        @step
        def d(b, c):
            return b + c

        @step
        def tolerant(optional=None):
            return optional
        """
    )
    return load(path)


def drain(c: Coordinator) -> list[str]:
    return c.take_ready(100)


def test_only_steps_without_inputs_are_ready_at_the_start(rb):
    c = Coordinator(rb)
    c.start()
    assert drain(c) == ["a"]
    assert drain(c) == []


def test_a_success_releases_exactly_the_dependents_whose_inputs_are_all_done(rb):
    c = Coordinator(rb)
    c.start()
    drain(c)
    c.on_started("a", 1)
    assert c.results["a"].status == R.STEP_RUNNING
    assert c.on_succeeded("a") == 1
    assert sorted(drain(c)) == ["b", "c"]
    c.on_succeeded("c")
    assert drain(c) == []  # d still waits for b
    c.on_succeeded("b")
    assert sorted(drain(c)) == ["d", "optional"]
    assert c.completed == ["a", "b"]  # reversible steps, in completion order
    assert c.seq == 3


def test_take_ready_respects_the_free_slots(rb):
    c = Coordinator(rb)
    c.start()
    drain(c)
    c.on_succeeded("a")
    assert len(c.take_ready(1)) == 1
    assert c.has_ready()
    assert len(c.take_ready(1)) == 1
    assert not c.has_ready()


def test_a_required_failure_stops_scheduling_and_fails_the_run(rb):
    c = Coordinator(rb)
    c.start()
    drain(c)
    c.on_succeeded("a")
    c.on_failed("b")
    assert c.failing and c.stopping
    assert drain(c) == []  # c was ready, but nothing new starts once failing
    assert c.failed == ["b"]
    assert c.status() == R.FAILED


def test_an_optional_failure_lets_the_run_go_on_and_its_dependents_skip(rb):
    c = Coordinator(rb)
    c.start()
    drain(c)
    c.on_succeeded("a")
    assert sorted(drain(c)) == ["b", "c"]
    c.on_succeeded("b")
    c.on_succeeded("c")
    assert sorted(drain(c)) == ["d", "optional"]
    c.on_failed("optional")
    assert not c.failing
    assert drain(c) == ["tolerant"]
    step = rb.steps["tolerant"]
    assert c.blocked_by(step.args) is None  # a default tolerates a failed input
    assert c.blocked_by(rb.steps["d"].args) is None
    assert c.blocked_by(rb.steps["optional"].args) is None


def test_blocked_by_names_the_input_and_its_status(rb):
    c = Coordinator(rb)
    c.on_skipped("a", "when")
    assert c.blocked_by(rb.steps["b"].args) == "a skipped"
    c.results["a"].status = R.STEP_FAILED
    assert c.blocked_by(rb.steps["b"].args) == "a failed"


def test_retry_decisions_and_backoff_are_pure(rb):
    c = Coordinator(rb)
    assert c.should_retry("a", 1) and c.should_retry("a", 2)
    assert not c.should_retry("a", 3)  # retries=2: three attempts in all
    assert not c.should_retry("a", 1, lease_lost=True)  # someone else holds the lock now
    assert not c.should_retry("b", 1)
    # Equal jitter: half fixed, half from the driver's random number; capped by backoff_max.
    assert c.backoff("a", 1, 0.0) == 1.0
    assert c.backoff("a", 1, 1.0) == 2.0
    assert c.backoff("a", 2, 0.5) == 3.0
    assert c.backoff("a", 5, 0.0) == 2.5  # min(5, 2 * 16) / 2
    # The formula of runbook.backoff: a very late retry is capped, not an OverflowError.
    assert c.backoff("a", 5000, 0.0) == 2.5


def test_rollback_order_is_failed_first_then_completed_newest_first(rb):
    c = Coordinator(rb)
    c.start()
    drain(c)
    c.on_succeeded("a")
    c.on_succeeded("b")
    c.on_cancelled("a")  # not possible in a real run; checks de-duplication below
    c.results["a"].status = R.STEP_SUCCEEDED
    c.failed.clear()
    c.on_failed("d")  # d has no rollback: only the undo of completed steps
    c.begin_rollback()
    order = []
    while (name := c.next_rollback()) is not None:
        order.append(name)
        c.on_rolled_back(name)
    assert order == ["b", "a"]
    assert c.status() == R.ROLLED_BACK


def test_a_cut_off_reversible_step_is_rolled_back_first(rb):
    c = Coordinator(rb)
    c.start()
    drain(c)
    c.on_succeeded("a")
    c.on_cancelled("b")
    c.cancel_run()
    assert c.failed == ["b"]
    order = []
    while (name := c.next_rollback()) is not None:
        order.append(name)
    assert order == ["b", "a"]
    assert c.status() == R.CANCELLED


def test_a_failed_rollback_makes_the_run_rollback_failed(rb):
    c = Coordinator(rb)
    c.on_succeeded("a")
    c.on_failed("c")  # c has no rollback of its own
    name = c.next_rollback()
    assert name == "a"
    c.on_rollback_failed("a", "boom")
    assert c.results["a"].rollback_error == "boom"
    assert c.status() == R.ROLLBACK_FAILED


def test_gates_pause_the_run_and_a_denial_fails_it(rb):
    c = Coordinator(rb)
    assert c.on_awaiting("c") is True
    assert c.on_awaiting("c") is False  # already waiting: nothing new to record
    assert c.status() == R.PAUSED
    assert c.awaiting() == ["c"]
    c.on_denied("c")
    assert c.status() == R.FAILED
    assert c.first_error() == "c: approval denied"


def test_dry_run_is_always_succeeded_and_planned_releases_dependents(rb):
    c = Coordinator(rb)
    c.start()
    drain(c)
    c.on_planned("a", "would run")
    assert sorted(drain(c)) == ["b", "c"]
    c.on_failed("b")
    assert c.status(dry_run=True) == R.SUCCEEDED


def record(
    name: str, status: str, seq: int | None = None, output=None, rollback=None, error=None
) -> StepRecord:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    return StepRecord("r1", name, status, output, error, 1, at, at, 0.0, None, seq, rollback)


def test_restore_rebuilds_the_same_state_a_fresh_run_had(rb):
    records = {
        "a": record("a", R.STEP_SUCCEEDED, 1, output=1),
        "b": record("b", R.STEP_SUCCEEDED, 2, output=2),
        "c": record("c", R.STEP_RUNNING),
        "gone": record("gone", R.STEP_SUCCEEDED, 3),  # a step no longer in the runbook
    }
    outputs: dict = {}
    c = Coordinator(rb)
    assert c.restore(records, outputs, decisions={"c": RERUN}) == []
    assert outputs == {"a": 1, "b": 2}
    assert c.completed == ["a", "b"] and c.seq == 3
    c.start()
    assert sorted(drain(c)) == ["c", "optional"]  # c re-runs; a and b are not run again


def test_restore_skip_marks_the_interrupted_step_and_reports_it_changed(rb):
    records = {
        "a": record("a", R.STEP_SUCCEEDED, 1, output=1),
        "b": record("b", R.STEP_SUCCEEDED, 2, output=2),
        "c": record("c", R.STEP_RUNNING),
    }
    c = Coordinator(rb)
    assert c.restore(records, {}, decisions={"c": SKIP}) == ["c"]
    assert c.results["c"].status == R.SKIPPED
    assert c.results["c"].reason == "skipped (operator)"
    c.start()
    c.take_ready(10)
    assert c.blocked_by(rb.steps["d"].args) == "c skipped"  # dependents follow the skip rules


def test_restore_unwraps_a_redacted_output(rb):
    masked = {REDACTED_KEY: True, "value": "***"}
    outputs: dict = {}
    Coordinator(rb).restore({"a": record("a", R.STEP_SUCCEEDED, 1, output=masked)}, outputs)
    assert outputs == {"a": "***"}


def test_settle_denies_the_gate_and_cancels_a_crashed_step(rb):
    records = {
        "a": record("a", R.STEP_SUCCEEDED, 1, output=1),
        "b": record("b", R.STEP_RUNNING),
        "c": record("c", R.AWAITING_APPROVAL),
    }
    c = Coordinator(rb)
    assert c.restore(records, {}, decisions={"b": CUT_OFF}, cause=FAILED) == ["b"]
    assert c.settle(cancel=False) == ["c"]
    assert c.results["c"].status == R.DENIED and c.failing
    assert c.results["b"].status == R.STEP_CANCELLED and c.failed == ["b"]
    order = []
    while (name := c.next_rollback()) is not None:
        order.append(name)
    assert order == ["b", "a"]


def test_settle_cancel_cancels_the_gate(rb):
    c = Coordinator(rb)
    c.restore({"c": record("c", R.AWAITING_APPROVAL)}, {}, cause=CANCELLED)
    assert c.settle(cancel=True) == ["c"]
    assert c.results["c"].status == R.STEP_CANCELLED
    assert c.status() == R.CANCELLED


def test_same_events_same_decisions(rb):
    """Determinism: two coordinators fed the same events agree on every decision."""

    def play() -> list[object]:
        c = Coordinator(rb)
        c.start()
        seen: list[object] = [drain(c)]
        c.on_succeeded("a")
        seen.append(sorted(drain(c)))
        c.on_succeeded("b")
        c.on_failed("c")
        seen.append(drain(c))
        seen.append([c.next_rollback(), c.next_rollback(), c.next_rollback()])
        seen.append(c.status())
        return seen

    assert play() == play() == [["a"], ["b", "c"], [], ["b", "a", None], R.FAILED]


# -- the result model (DESIGN 10) ---------------------------------------------------------------


def test_a_failed_step_keeps_failed_and_carries_its_rollback_outcome(rb):
    c = Coordinator(rb)
    c.on_succeeded("a")
    c.on_failed("b")  # b is reversible with a rollback: undone first
    assert c.next_rollback() == "b"
    c.on_rollback_started("b")
    assert c.results["b"].rollback == R.ROLLBACK_RUNNING
    c.on_rolled_back("b")
    assert (c.results["b"].status, c.results["b"].rollback) == (R.STEP_FAILED, R.STEP_ROLLED_BACK)
    assert c.next_rollback() == "a"
    c.on_rolled_back("a")
    assert (c.results["a"].status, c.results["a"].rollback) == (R.STEP_ROLLED_BACK, "rolled_back")
    assert c.results["c"].rollback is None
    assert c.status() == R.ROLLED_BACK


def test_a_halting_rollback_stops_the_rest(rb):
    c = Coordinator(rb)
    c.on_succeeded("a")
    c.on_succeeded("b")
    c.on_failed("c")
    assert c.next_rollback() == "b"
    c.on_rollback_failed("b", "halted", halt=True)
    assert c.next_rollback() is None
    assert c.status() == R.ROLLBACK_FAILED


# -- resuming a run that was rolling back -------------------------------------------------------


def test_a_run_killed_during_rollback_goes_on_rolling_back_in_the_same_order(rb):
    """Killed after undoing b, while a's undo had not started: a is undone next, nothing runs."""
    records = {
        "a": record("a", R.STEP_SUCCEEDED, 1, output=1),
        "b": record("b", R.STEP_ROLLED_BACK, 2, output=2, rollback=R.STEP_ROLLED_BACK),
        "c": record("c", R.STEP_FAILED, 3, error="boom"),
    }
    c = Coordinator(rb)
    c.restore(records, {}, cause=FAILED)
    c.start()
    assert c.stopping and c.take_ready(10) == []  # never forward again
    assert [c.next_rollback(), c.next_rollback()] == ["a", None]
    c.on_rolled_back("a")
    assert c.status() == R.ROLLED_BACK
    assert c.first_error() == "c: boom"


def test_the_stored_steps_alone_say_a_run_was_failing(rb):
    """Without the stored cause (killed before it was written), a required failure says so."""
    records = {
        "a": record("a", R.STEP_SUCCEEDED, 1, output=1),
        "c": record("c", R.STEP_FAILED, 2, error="boom"),
    }
    assert rolling_back(rb.steps, records)
    assert not rolling_back(rb.steps, {"a": records["a"]})
    optional = {"optional": record("optional", R.STEP_FAILED, 1)}
    assert not rolling_back(rb.steps, optional)  # an optional failure does not fail the run
    c = Coordinator(rb)
    c.restore(records, {})
    assert c.failing and c.next_rollback() == "a"


def test_an_interrupted_rollback_is_found_and_redone_in_its_place(rb):
    records = {
        "a": record("a", R.STEP_SUCCEEDED, 1, output=1),
        "b": record("b", R.STEP_SUCCEEDED, 2, output=2, rollback=R.ROLLBACK_RUNNING),
        "c": record("c", R.STEP_FAILED, 3),
    }
    assert interrupted(rb.steps, records) == [("b", True)]
    c = Coordinator(rb)
    assert c.restore(records, {}, decisions={"b": RETRY}, cause=FAILED) == ["b"]
    assert [c.next_rollback(), c.next_rollback(), c.next_rollback()] == ["b", "a", None]


def test_a_skipped_interrupted_rollback_is_a_failed_rollback(rb):
    records = {
        "a": record("a", R.STEP_SUCCEEDED, 1, output=1),
        "b": record("b", R.STEP_SUCCEEDED, 2, output=2, rollback=R.ROLLBACK_RUNNING),
        "c": record("c", R.STEP_FAILED, 3),
    }
    c = Coordinator(rb)
    c.restore(records, {}, decisions={"b": SKIP}, cause=FAILED)
    assert c.results["b"].status == R.STEP_ROLLBACK_FAILED
    assert "skipped by the operator" in c.results["b"].rollback_error
    assert [c.next_rollback(), c.next_rollback()] == ["a", None]
    assert c.status() == R.ROLLBACK_FAILED


def test_automatic_decisions(rb):
    a, b = rb.steps["a"], rb.steps["b"]
    idempotent = type("S", (), {"options": type("O", (), {"idempotent": True})()})()
    assert automatic_decision(a, rollback=False, rolling=False) is None  # a human decides
    assert automatic_decision(idempotent, rollback=False, rolling=False) == RERUN
    assert automatic_decision(b, rollback=False, rolling=True) == CUT_OFF  # never forward
    assert automatic_decision(b, rollback=True, rolling=True) is None
    assert automatic_decision(idempotent, rollback=True, rolling=True) == RERUN


def test_a_rerun_after_resume_does_not_count_the_dead_time(rb):
    records = {"a": record("a", R.STEP_RUNNING)}
    c = Coordinator(rb)
    c.restore(records, {}, decisions={"a": RERUN})
    res = c.results["a"]
    assert res.status == R.PENDING and res.started_at is None and res.duration is None


def test_cut_off_steps_are_undone_first_in_the_order_they_stopped(rb):
    records = {
        "a": record("a", R.STEP_SUCCEEDED, 1, output=1),
        "b": record("b", R.STEP_RUNNING),
    }
    c = Coordinator(rb)
    c.restore(records, {}, decisions={"b": CUT_OFF}, cause=CANCELLED)
    assert c.results["b"].status == R.STEP_CANCELLED
    assert [c.next_rollback(), c.next_rollback()] == ["b", "a"]
    c.on_rolled_back("b")
    c.on_rolled_back("a")
    assert c.status() == R.CANCELLED


def test_stored_steps_the_runbook_no_longer_has_decide_nothing(rb):
    """A step removed from the runbook since the run started: neither failing nor interrupted."""
    records = {
        "gone": record("gone", R.STEP_FAILED, 1, rollback=R.ROLLBACK_RUNNING),
        "vanished": record("vanished", R.STEP_RUNNING),
    }
    assert not rolling_back(rb.steps, records)
    assert interrupted(rb.steps, records) == []


def test_a_skipped_interrupted_rollback_of_a_failed_step_keeps_it_failed(rb):
    """Killed while undoing the step that failed, then --skip-interrupted: it stays `failed`
    (the failure is what happened), its rollback is left to a human."""
    records = {
        "a": record("a", R.STEP_FAILED, 1, error="boom", rollback=R.ROLLBACK_RUNNING),
    }
    c = Coordinator(rb)
    assert c.restore(records, {}, decisions={"a": SKIP}, cause=FAILED) == ["a"]
    res = c.results["a"]
    assert res.status == R.STEP_FAILED
    assert res.rollback == R.STEP_ROLLBACK_FAILED
    assert "undo by hand" in (res.rollback_error or "")


def test_a_stored_rollback_or_denial_says_the_run_was_failing(rb):
    undone = {"a": record("a", R.STEP_SUCCEEDED, 1, rollback=R.STEP_ROLLED_BACK)}
    assert rolling_back(rb.steps, undone)
    assert rolling_back(rb.steps, {"b": record("b", R.DENIED)})
