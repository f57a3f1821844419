"""Runs on a real Temporal dev server, with real ``runbook worker`` processes.

Store and audit are one PostgreSQL schema per test, locks a Redis prefix per test: what several
machines share. A worker "host" dying is a SIGKILLed worker process. Nothing of Temporal is mocked.
Steps that must be caught mid-way write a marker file and wait (bounded) for a release file, so
the test kills exactly when the step is running, never after a guessed sleep.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = [pytest.mark.service, pytest.mark.slow]


def status(progress: Any, step: str) -> str | None:
    found = progress.steps.get(step)
    return found.status if found is not None else None


FIVE_STEPS = '''
"""Five steps; the two in the middle meet at a barrier, so they need two workers at once."""
import os, time
from pathlib import Path
from runbook import step

HERE = Path(__file__).parent


def meet(name, other):
    (HERE / name).write_text(str(os.getpid()))
    deadline = time.monotonic() + 15
    while not (HERE / other).exists():
        assert time.monotonic() < deadline, f"{other} never started: only one worker ran"
        time.sleep(0.02)
    return os.getpid()


@step
def plan():
    return {"pid": os.getpid()}


@step
def left(plan):
    return meet("left", "right")


@step
def right(plan):
    return meet("right", "left")


@step
def join(left, right):
    return [left, right]


@step
def report(join, plan):
    return {"workers": sorted(set(join)), "plan": plan["pid"], "pid": os.getpid()}
'''


def test_a_five_step_run_across_two_workers(project: Any, user: Any) -> None:
    path = project.runbook("five", FIVE_STEPS)
    # One attempt at a time each: the barrier in the middle can only be met by both workers.
    a, b = project.workers(2, concurrency=1)
    run_id = user.start(path)
    state = user.follow(run_id)
    assert state.status == "succeeded", state
    assert all(s.status == "succeeded" for s in state.steps.values())
    assert sorted(state.outputs["report"]["workers"]) == sorted([a.pid, b.pid])
    stored = user.store.get_steps(run_id)
    assert {n: r.status for n, r in stored.items()} == dict.fromkeys(
        ["plan", "left", "right", "join", "report"], "succeeded"
    )
    assert user.store.get_run(run_id).status == "succeeded"
    kinds = [e.kind for e in user.audit(run_id)]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("step_succeeded") == 5


def _held(name: str) -> str:
    """A step that says it started, then waits (at most 20 s) to be released."""
    return f'''
    (HERE / "{name}.pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 20
    while not (HERE / "{name}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.getpid()
'''


KILLED = (
    """
import os, time
from pathlib import Path
from runbook import step

HERE = Path(__file__).parent


@step(idempotent=True)
def sync_cache():"""
    + _held("sync_cache")
    + """

@step
def migrate(sync_cache):"""
    + _held("migrate")
    + """

@step
def done(migrate):
    return os.getpid()
"""
)


def _running_on(project: Any, name: str, procs: list) -> object:
    marker = project.root / "runbooks" / f"{name}.pid"
    pid = int(
        project.wait_until(lambda: marker.exists() and marker.read_text(), what=f"{name} started")
    )
    (proc,) = [p for p in procs if p.pid == pid]
    marker.unlink()
    return proc


def test_a_worker_killed_mid_step_idempotent_retried_elsewhere_other_paused(
    project: Any, user: Any
) -> None:
    path = project.runbook("killed", KILLED)
    workers = project.workers(2)
    run_id = user.start(path)

    # The idempotent step: its worker dies; another worker runs it again, no one is asked.
    victim = _running_on(project, "sync_cache", workers)
    project.kill(victim)
    (survivor,) = [w for w in workers if w is not victim]
    (project.root / "runbooks" / "sync_cache.go").touch()

    # The non-idempotent step runs on the survivor (the only worker left); kill it mid-step too.
    assert _running_on(project, "migrate", workers) is survivor
    replacement = project.worker()
    project.kill(survivor)
    state = user.wait_for(run_id, lambda s: s.interrupted == ["migrate"])
    assert state.status == "paused"
    assert user.store.get_run(run_id).status == "paused"
    assert user.store.get_steps(run_id)["migrate"].status == "running"  # it may have half-happened
    time.sleep(2 * 1.0)  # two heartbeat timeouts: nothing re-runs it on its own
    assert not (project.root / "runbooks" / "migrate.pid").exists()

    # A human decides: run it again.
    (project.root / "runbooks" / "migrate.go").touch()
    answer = user.decide(run_id, "retry", "bob")
    assert answer == {"run_id": run_id, "step": "migrate", "decision": "retry"}
    state = user.follow(run_id)
    assert state.status == "succeeded", state
    assert state.outputs["sync_cache"] == survivor.pid
    assert state.outputs["migrate"] == replacement.pid
    events = user.audit(run_id)
    interrupted = [
        (e.step, e.data.get("decision"), e.actor) for e in events if e.kind == "step_interrupted"
    ]
    assert interrupted == [("sync_cache", "rerun", "alice"), ("migrate", "retry", "bob")]
    decisions = user.store.interrupt_decisions(run_id)
    assert [(d.step, d.choice, d.actor) for d in decisions] == [("migrate", "retry", "bob")]


def test_an_interrupted_step_can_be_skipped_by_decision(project: Any, user: Any) -> None:
    path = project.runbook("killed", KILLED)
    (project.root / "runbooks" / "sync_cache.go").touch()
    first = project.worker()
    run_id = user.start(path)
    _running_on(project, "migrate", [first])
    project.worker()
    project.kill(first)
    user.wait_for(run_id, lambda s: s.interrupted == ["migrate"])
    with pytest.raises(Exception, match=r"no interrupted step|interrupted steps"):
        user.decide(run_id, "retry", "bob", step="done")
    user.decide(run_id, "skip", "bob")
    state = user.follow(run_id)
    assert state.status == "succeeded"
    assert state.steps["migrate"].status == "skipped"
    assert state.steps["done"].status == "skipped"  # its input was never produced
    assert user.store.get_steps(run_id)["migrate"].status == "skipped"


QUEUES = """
import os
from runbook import step


@step
def plan():
    return os.getpid()


@step(queue="db")
def migrate(plan):
    return os.getpid()


@step
def verify(migrate):
    return os.getpid()
"""


def test_queue_routes_a_step_to_the_workers_of_its_queue(project: Any, user: Any) -> None:
    path = project.runbook("queues", QUEUES)
    web = project.worker()
    db = project.worker("db")
    run_id = user.start(path)
    state = user.follow(run_id)
    assert state.status == "succeeded", state
    assert state.outputs == {"plan": web.pid, "migrate": db.pid, "verify": web.pid}


def test_a_step_whose_queue_has_no_worker_waits_for_one(project: Any, user: Any) -> None:
    path = project.runbook("queues", QUEUES)
    project.worker()
    run_id = user.start(path)
    state = user.wait_for(run_id, lambda s: status(s, "plan") == "succeeded")
    time.sleep(1.0)
    state = user.wait_for(run_id, lambda s: True)
    assert state.status == "running" and state.steps["migrate"].status == "running"
    db = project.worker("db")
    state = user.follow(run_id)
    assert state.status == "succeeded" and state.outputs["migrate"] == db.pid


GATED = """
from runbook import Approval, step


@step
def plan():
    return "green"


@step(approval=Approval(min=2, allow_self=False))
def switch(plan):
    return plan


@step
def verify(switch):
    return switch
"""


def test_an_approval_decided_while_no_process_of_the_user_runs(project: Any, user: Any) -> None:
    path = project.runbook("gated", GATED)
    project.worker()
    run_id = user.start(path)
    state = user.follow(run_id)  # follows until the run waits for a human
    assert state.status == "paused" and state.waiting == ["switch"]
    assert user.store.get_run(run_id).status == "paused"

    with pytest.raises(Exception, match=r"started run .* cannot approve"):
        user.decide(run_id, "approve", "alice")  # four eyes: not the initiator
    assert user.decide(run_id, "approve", "bob")["satisfied"] is False
    with pytest.raises(Exception, match="bob already approved"):
        user.decide(run_id, "approve", "bob")
    assert user.decide(run_id, "approve", "carol", comment="lgtm")["satisfied"] is True
    state = user.follow(run_id)
    assert state.status == "succeeded", (
        state,
        [(e.kind, e.step, e.actor) for e in user.audit(run_id)],
        user.store.approvals(run_id),
    )
    assert state.outputs["verify"] == "green"
    granted = [r.actor for r in user.store.approvals(run_id, "switch") if r.decision == "granted"]
    assert granted == ["bob", "carol"]
    kinds = [e.kind for e in user.audit(run_id)]
    assert kinds.count("approval_granted") == 2 and "approval_requested" in kinds


def test_a_denied_gate_fails_the_run(project: Any, user: Any) -> None:
    path = project.runbook("gated", GATED)
    project.worker()
    run_id = user.start(path)
    user.follow(run_id)
    user.decide(run_id, "deny", "bob", comment="not today")
    state = user.follow(run_id)
    assert state.status == "failed"
    assert state.steps["switch"].status == "denied"
    assert user.store.get_run(run_id).status == "failed"


BAKE = """
import os
from runbook import step
from runbook.markers import WAIT_ATTR


@step
def shift():
    return os.getpid()


@step(after=[shift])
async def bake(clock):
    await clock.asleep(5)
    return os.getpid()


setattr(bake, WAIT_ATTR, 5)


@step
def analyze(bake):
    return os.getpid()
"""


def test_a_durable_bake_survives_the_death_of_every_worker(project: Any, user: Any) -> None:
    path = project.runbook("bake", BAKE)
    workers = project.workers(2)
    run_id = user.start(path)
    user.wait_for(run_id, lambda s: status(s, "shift") == "succeeded")
    began = time.monotonic()
    for w in workers:
        project.kill(w)
    time.sleep(5.5)  # the bake's timer runs out on the server while no worker exists
    project.worker()
    restarted = time.monotonic()
    state = user.follow(run_id)
    assert state.status == "succeeded", state
    # Not baked again from the start: the run ended sooner than another bake would take, and
    # the bake step itself, whose clock waits were served by the timer, took no time.
    assert time.monotonic() - restarted < 5.0
    assert time.monotonic() - began >= 5.0
    assert state.steps["bake"].duration < 1.0
    assert user.store.get_steps(run_id)["bake"].status == "succeeded"
