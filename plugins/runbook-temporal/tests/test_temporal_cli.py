"""The user's commands against runs on Temporal: ``exec --executor``, ``--detach``, ``approve``,
``resume``, each a real ``runbook`` process, with real ``runbook worker`` processes."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

pytestmark = [pytest.mark.service, pytest.mark.slow]

HELD = """
import os, time
from pathlib import Path
from runbook import step

HERE = Path(__file__).parent


@step
def plan():
    return os.getpid()


@step
def migrate(plan):
    (HERE / "migrate.pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 20
    while not (HERE / "migrate.go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.getpid()


@step
def done(migrate):
    return migrate
"""


def run(project: Any, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = project.spawn(*args, "--config", str(project.config))
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def started(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"run (\S+) started on temporal://", result.stdout)
    assert match, (result.returncode, result.stdout, result.stderr)
    return match.group(1)


def test_the_exec_process_killed_mid_run_and_the_run_finishing_anyway(
    project: Any, user: Any
) -> None:
    path = project.runbook("held", HELD)
    (worker,) = project.workers(1)
    execp = project.spawn(
        "exec", str(path), "--executor", project.executor, "--as", "alice",
        "--config", str(project.config),
    )  # fmt: skip
    marker = project.root / "runbooks" / "migrate.pid"
    project.wait_until(marker.exists, what="migrate started")
    project.kill(execp)  # the user's terminal is gone
    (project.root / "runbooks" / "migrate.go").touch()
    (run_id,) = [r.run_id for r in user.store.list_runs()]
    project.wait_until(
        lambda: user.store.get_run(run_id).status == "succeeded", what="the run finished"
    )
    steps = user.store.get_steps(run_id)
    assert {n: s.status for n, s in steps.items()} == dict.fromkeys(
        ["plan", "migrate", "done"], "succeeded"
    )
    assert steps["done"].output == worker.pid
    shown = run(project, "show", run_id)
    assert shown.returncode == 0 and "succeeded" in shown.stdout


def test_exec_follows_the_run_and_reports_like_a_local_one(project: Any) -> None:
    path = project.runbook("held", HELD)
    (project.root / "runbooks" / "migrate.go").touch()
    project.workers(1)
    result = run(project, "exec", str(path), "--executor", project.executor, "--as", "alice")
    assert result.returncode == 0, result.stderr
    assert re.search(r"✓ plan\s+\S+s", result.stdout), result.stdout
    assert "✓ migrate" in result.stdout and "✓ done" in result.stdout
    assert "run succeeded: 3 succeeded" in result.stdout


GATED = """
from runbook import Approval, step


@step
def plan():
    return "green"


@step(approval=Approval(min=2, allow_self=False))
def switch(plan):
    return plan
"""


def test_an_approval_decided_while_no_process_of_the_user_runs(project: Any, user: Any) -> None:
    path = project.runbook("gated", GATED)
    (worker,) = project.workers(1)
    detached = run(
        project, "exec", str(path), "--executor", project.executor, "--as", "alice", "--detach"
    )
    assert detached.returncode == 0, detached.stderr
    run_id = started(detached)
    project.wait_until(lambda: user.store.get_run(run_id).status == "paused", what="the gate")
    # The configured notify rule (console://) fired on the worker that reached the gate.
    project.wait_until(lambda: "approval" in project.log(worker).lower(), what="a notification")
    assert run_id in project.log(worker)

    self_approval = run(project, "approve", run_id, "--as", "alice")
    assert self_approval.returncode == 2
    assert "alice started run" in self_approval.stderr and "cannot approve" in self_approval.stderr
    assert "Traceback" not in self_approval.stderr
    refused = [e for e in user.audit(run_id) if e.kind == "approval_refused"]
    assert [(e.actor, e.step) for e in refused] == [("alice", "switch")]

    first = run(project, "approve", run_id, "--as", "bob")
    assert first.returncode == 0 and "waiting for 1 more approver" in first.stdout, first
    second = run(project, "approve", run_id, "--as", "carol", "--comment", "lgtm")
    assert second.returncode == 0 and "goes on by itself" in second.stdout
    # Nothing of the user runs now: the workers finish the run.
    project.wait_until(
        lambda: user.store.get_run(run_id).status == "succeeded", what="the run finished"
    )
    assert user.store.get_steps(run_id)["switch"].output == "green"


def test_resume_decides_an_interrupted_step(project: Any, user: Any) -> None:
    path = project.runbook("held", HELD)
    (first,) = project.workers(1)
    detached = run(project, "exec", str(path), "--executor", project.executor, "--detach")
    run_id = started(detached)
    marker = project.root / "runbooks" / "migrate.pid"
    project.wait_until(marker.exists, what="migrate started")
    project.workers(1)
    project.kill(first)
    project.wait_until(lambda: user.store.get_run(run_id).status == "paused", what="interrupted")

    undecided = run(project, "resume", run_id)
    assert undecided.returncode == 2
    assert "migrate" in undecided.stderr and "--retry-interrupted" in undecided.stderr

    (project.root / "runbooks" / "migrate.go").touch()
    resumed = run(project, "resume", run_id, "--retry-interrupted", "--as", "bob")
    assert resumed.returncode == 0, resumed.stderr
    assert "run succeeded" in resumed.stdout
    assert [(d.step, d.choice, d.actor) for d in user.store.interrupt_decisions(run_id)] == [
        ("migrate", "retry", "bob")
    ]


def test_detach_needs_an_executor_that_runs_elsewhere(project: Any) -> None:
    path = project.runbook("gated", GATED)
    result = run(project, "exec", str(path), "--detach")
    assert result.returncode == 2
    assert "--detach needs an executor that runs elsewhere" in result.stderr


LOCKED = """
import os, time
from pathlib import Path
from runbook import rollback, step

HERE = Path(__file__).parent
lock = "web-{env}"


@step(reversible=True)
def stage(ctx):
    (HERE / "stage.pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 20
    while not (HERE / "stage.go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"token": ctx.fencing_token}


@rollback(stage)
def unstage(stage):  # None when the cancellation cut stage off before it returned
    (HERE / "unstaged").write_text(str(stage["token"]) if stage else "cut off")


@step
def switch(stage, ctx):
    return ctx.fencing_token
"""


def test_the_run_lock_and_its_fencing_token_travel_with_the_activities(
    project: Any, user: Any
) -> None:
    path = project.runbook("locked", LOCKED)
    project.workers(1)
    first = started(run(project, "exec", str(path), "--executor", project.executor, "--detach"))
    project.wait_until((project.root / "runbooks" / "stage.pid").exists, what="stage started")
    held = user.runner.lock_provider.holder("web-dev")
    assert held is not None and held.owner == first

    second = run(project, "exec", str(path), "--executor", project.executor)
    assert second.returncode == 5, (second.stdout, second.stderr)
    assert "web-dev" in second.stdout + second.stderr

    (project.root / "runbooks" / "stage.go").touch()
    project.wait_until(lambda: user.store.get_run(first).status == "succeeded", what="finished")
    outputs = {n: s.output for n, s in user.store.get_steps(first).items()}
    assert outputs == {"stage": {"token": held.token}, "switch": held.token}
    assert user.runner.lock_provider.holder("web-dev") is None  # released at the end


def test_cancel_stops_the_running_step_and_rolls_back(project: Any, user: Any) -> None:
    path = project.runbook("locked", LOCKED)
    project.workers(1)
    run_id = started(run(project, "exec", str(path), "--executor", project.executor, "--detach"))
    project.wait_until((project.root / "runbooks" / "stage.pid").exists, what="stage started")
    canceller = project.spawn("cancel", run_id, "--as", "bob", "--config", str(project.config))
    user.wait_for(run_id, lambda s: s.stopping)  # the workflow took the cancellation
    (project.root / "runbooks" / "stage.go").touch()  # the thread ends; then the undo runs
    out, err = canceller.communicate(timeout=60)
    assert canceller.returncode == 0, (out, err)
    assert user.store.get_run(run_id).status == "cancelled"
    steps = user.store.get_steps(run_id)
    # Either stage returned before the cancellation reached it (then it is undone), or the
    # cancellation cut it off (it is cancelled, and its own rollback runs): undone either way.
    stage = steps["stage"]
    assert stage.status == "rolled_back" or (
        stage.status == "cancelled" and stage.rollback == "rolled_back"
    ), stage
    assert "switch" not in steps or steps["switch"].status != "succeeded"
    kinds = [e.kind for e in user.audit(run_id)]
    assert "run_cancelled" in kinds and "rollback_succeeded" in kinds


CUT_OFF = """
import os
from pathlib import Path
from runbook import rollback, step

HERE = Path(__file__).parent


@step(reversible=True)
def stage(clock):
    (HERE / "stage.pid").write_text(str(os.getpid()))
    for _ in range(400):  # never returns on its own within the test: only a cancel ends it
        clock.sleep(0.05)
    return "finished"


@rollback(stage)
def unstage(stage):
    (HERE / "unstaged").write_text(repr(stage))


@step
def switch(stage):
    return stage
"""


def test_a_step_cut_off_by_cancel_is_cancelled_and_its_own_rollback_runs(
    project: Any, user: Any
) -> None:
    path = project.runbook("cut_off", CUT_OFF)
    project.workers(1)
    run_id = started(run(project, "exec", str(path), "--executor", project.executor, "--detach"))
    project.wait_until((project.root / "runbooks" / "stage.pid").exists, what="stage started")
    canceller = run(project, "cancel", run_id, "--as", "bob", "--config", str(project.config))
    assert canceller.returncode == 0, (canceller.stdout, canceller.stderr)
    assert user.store.get_run(run_id).status == "cancelled"
    stage = user.store.get_steps(run_id)["stage"]
    assert (stage.status, stage.rollback) == ("cancelled", "rolled_back")
    assert (project.root / "runbooks" / "unstaged").read_text() == "None"
    events = [(e.kind, e.step) for e in user.audit(run_id)]
    # Every step_started has its outcome: the attempt's end is in the trail, then its undo.
    assert events.index(("step_failed", "stage")) < events.index(("rollback_succeeded", "stage"))
    assert ("step_started", "switch") not in events
