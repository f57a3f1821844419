"""``Approval(timeout=...)`` on Temporal: a durable timer in the workflow, not a command's check.

The dev server cannot skip time, so the gates here time out after 2 s of real time. Nothing of
Temporal is mocked; the store and audit are the test's PostgreSQL schema.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import pytest

pytestmark = [pytest.mark.service, pytest.mark.slow]

TIMED = """
from runbook import Approval, step


@step
def plan():
    return "green"


@step(approval=Approval(timeout="2s", on_timeout="{action}"))
def switch(plan):
    return plan


@step
def verify(switch):
    return switch
"""


def _deadline(user: Any, run_id: str) -> datetime:
    (asked,) = [e for e in user.audit(run_id) if e.kind == "approval_requested"]
    return datetime.fromisoformat(asked.data["deadline"])


def _timer_fired_at(user: Any, run_id: str) -> datetime:
    from runbook_temporal.client import workflow_id
    from temporalio.api.enums.v1 import EventType

    async def history() -> Any:
        client = await user.runs.client()
        return await client.get_workflow_handle(workflow_id(run_id)).fetch_history()

    events = asyncio.run(history()).events
    (fired,) = [e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED]
    return fired.event_time.ToDatetime().astimezone()


def test_a_gate_expires_on_time_while_no_worker_and_no_user_process_lives(
    project: Any, user: Any
) -> None:
    path = project.runbook("timed", TIMED.format(action="deny"))
    worker = project.worker()
    run_id = user.start(path)
    state = user.follow(run_id)
    assert state.status == "paused" and state.waiting == ["switch"]
    deadline = _deadline(user, run_id)
    project.kill(worker)  # from here until the deadline, nothing of runbook runs anywhere
    time.sleep(max(0.0, (deadline - datetime.now(deadline.tzinfo)).total_seconds()) + 1.0)

    # The server's timer fired at the deadline, with no worker alive to be asked.
    fired = _timer_fired_at(user, run_id)
    assert deadline <= fired < datetime.now(deadline.tzinfo)
    # An approval after the deadline is refused and audited, though no worker recorded the
    # expiry yet.
    with pytest.raises(Exception, match="expired"):
        user.decide(run_id, "approve", "bob")
    with pytest.raises(Exception, match="expired"):
        user.decide(run_id, "deny", "bob")
    # Nor does a command (show, runs, sweep) settle the run here, behind its workflow's back.
    from runbook.expiry import apply_expired

    assert apply_expired(user.runner.durable, user.store.get_run(run_id)) == []

    project.worker()
    state = user.wait_for(run_id, lambda s: s.finished, timeout=20)
    assert state.finished and state.status == "failed", state
    assert state.steps["switch"].status == "denied" and "verify" not in state.outputs
    audit = user.audit(run_id)
    (expired,) = [e for e in audit if e.kind == "approval_expired"]
    assert expired.actor == "runbook" and expired.data["on_timeout"] == "deny"
    assert expired.data["deadline"] == deadline.isoformat()
    refused = [e for e in audit if e.kind == "approval_refused"]
    assert [e.data["decision"] for e in refused] == ["granted", "denied"]
    assert all("expired" in e.data["reason"] for e in refused)
    assert [e.data["status"] for e in audit if e.kind == "run_finished"] == ["failed"]
    assert user.store.get_run(run_id).status == "failed"
    assert user.store.get_steps(run_id)["switch"].status == "denied"
    (denial,) = [r for r in user.store.approvals(run_id, "switch") if r.decision == "denied"]
    assert denial.actor == "runbook" and denial.data["expired"] is True


def test_on_timeout_fail_fails_the_step(project: Any, user: Any) -> None:
    path = project.runbook("timed", TIMED.format(action="fail"))
    project.worker()
    run_id = user.start(path)
    state = user.wait_for(run_id, lambda s: s.finished, timeout=20)
    assert state.status == "failed" and state.steps["switch"].status == "failed"
    assert "expired" in (state.steps["switch"].error or "")
    audit = user.audit(run_id)
    assert [e.data["on_timeout"] for e in audit if e.kind == "approval_expired"] == ["fail"]
    (failed,) = [e for e in audit if e.kind == "step_failed"]
    assert failed.step == "switch" and "expired" in failed.data["error"]
    assert not [e for e in audit if e.kind == "approval_denied"]
    assert user.store.get_steps(run_id)["switch"].status == "failed"
    assert user.store.get_run(run_id).status == "failed"
