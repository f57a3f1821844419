"""``Approval(timeout=..., on_timeout=...)``: decided by the first command that touches the run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from runbook.config import load_config
from runbook.runner import Runner
from runbook.testing.fakes import FakeClock

from .conftest import Project


def started_hours_ago(project: Project, hours: float, env: str = "stage") -> str:
    """A run paused at its gate ``hours`` ago (a fake clock), seen now by real commands."""
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=hours), freeze=False)
    config = load_config(project.root)
    with Runner.from_config(config, env=env, actor="alice", clock=clock) as runner:
        result = runner.run(project.root / "deploy.py")
    assert result.status == "paused"
    return result.run_id


@pytest.mark.parametrize("command", ["show", "runs", "sweep", "approve", "resume"])
def test_an_expired_gate_is_denied_by_the_first_command_that_touches_it(
    project: Project, command: str
) -> None:
    project.write('Approval(timeout="4h", on_timeout="deny")')
    run_id = started_hours_ago(project, 5)
    args = {"show": [run_id], "runs": [], "sweep": [], "approve": [run_id], "resume": [run_id]}
    done = project.invoke(command, *args[command], actor="bob")
    if command in ("approve", "resume"):
        assert done.exit_code == 2 and "expired" in done.stderr
        (refused,) = project.events("approval_refused", run_id)
        assert "expired" in refused["data"]["reason"]
    else:
        assert done.exit_code == 0, done.output
    (expired,) = project.events("approval_expired", run_id)
    assert expired["actor"] == "runbook" and expired["data"]["on_timeout"] == "deny"
    shown = project.invoke("show", run_id, "--json").stdout
    assert '"status": "denied"' in shown  # the gate step
    assert project.events("run_finished", run_id)[-1]["data"]["status"] in ("failed", "rolled_back")
    assert "switch" not in project.journal


def test_on_timeout_fail_fails_the_step(project: Project) -> None:
    project.write('Approval(timeout="1h", on_timeout="fail")')
    run_id = started_hours_ago(project, 2)
    done = project.invoke("sweep")
    assert done.exit_code == 0 and "expired" in done.stdout and "1 expired gate" in done.stdout
    (failed,) = project.events("step_failed", run_id)
    assert failed["step"] == "switch" and "expired" in failed["data"]["error"]
    assert project.events("approval_denied", run_id) == []


def test_a_gate_within_its_timeout_is_left_alone(project: Project) -> None:
    project.write('Approval(timeout="4h")')
    run_id = started_hours_ago(project, 1)
    assert "nothing expired" in project.invoke("sweep").stdout
    shown = project.invoke("show", run_id).stdout
    assert "expires " in shown and "(deny)" in shown
    assert project.invoke("approve", run_id, actor="bob").exit_code == 0
    assert project.events("approval_expired", run_id) == []


def test_the_engine_records_the_deadline_from_its_own_clock(project: Project) -> None:
    project.write('Approval(timeout="90m")')
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC), freeze=False)
    with Runner.from_config(load_config(project.root), env="stage", clock=clock) as runner:
        result = runner.run(project.root / "deploy.py")
    (asked,) = [e for e in result.audit if e.kind == "approval_requested"]
    assert asked.data["deadline"] == "2030-01-01T01:30:00+00:00"


def test_sweep_reports_a_run_whose_runbook_is_gone_and_sweeps_the_others(project: Project) -> None:
    """The gone run's expiry is recorded once (not at every sweep), one line says why it is not
    settled, the runs before and after it are settled, and the exit code is that problem's."""
    project.write('Approval(timeout="4h", on_timeout="deny")')
    older = started_hours_ago(project, 6)
    gone_path = project.root / "gone.py"
    gone_path.write_text((project.root / "deploy.py").read_text())
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=5), freeze=False)
    with Runner.from_config(load_config(project.root), env="stage", clock=clock) as runner:
        gone = runner.run(gone_path).run_id
    newer = started_hours_ago(project, 5)
    gone_path.unlink()
    for _ in range(2):
        done = project.invoke("sweep")
        assert done.exit_code == 2, done.output
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"runbook: error: run {gone}: approval of 'switch' expired")
        assert "not settled" in line and "gone.py" in line
        assert len(project.events("approval_expired", gone)) == 1
    for run_id in (older, newer):
        (expired,) = project.events("approval_expired", run_id)
        assert expired["data"]["on_timeout"] == "deny"
        finished = project.events("run_finished", run_id)[-1]
        assert finished["data"]["status"] in ("failed", "rolled_back")
    with Runner.from_config(load_config(project.root), env="stage") as runner:
        assert len(runner.store.approvals(gone, "switch")) == 1  # the expiry's denial, once
        assert runner.store.get_run(gone).status == "paused"
    as_json = project.invoke("sweep", "--json")
    assert as_json.exit_code == 2
    doc = json.loads(as_json.stdout)
    assert doc["expired"] == [] and [p["run_id"] for p in doc["problems"]] == [gone]
    shown = project.invoke("show", gone)  # touching the run does not record it again either
    assert shown.exit_code == 0 and f"run {gone}: paused" in shown.stdout
    assert shown.stderr.startswith(f"runbook: warning: run {gone}: approval of 'switch' expired")
    assert "not settled" in shown.stderr and "gone.py" in shown.stderr
    assert len(project.events("approval_expired", gone)) == 1


def test_runs_lists_every_run_when_one_expired_run_s_runbook_is_gone(project: Project) -> None:
    # runs exited 2 with the missing file's error and listed nothing at all.
    project.write('Approval(timeout="4h", on_timeout="deny")')
    kept = started_hours_ago(project, 1)  # not expired yet
    gone_path = project.root / "gone.py"
    gone_path.write_text((project.root / "deploy.py").read_text())
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=5), freeze=False)
    with Runner.from_config(load_config(project.root), env="stage", clock=clock) as runner:
        gone = runner.run(gone_path).run_id
    gone_path.unlink()
    listed = project.invoke("runs", "--json")
    assert listed.exit_code == 0, listed.output
    assert {r["run_id"] for r in json.loads(listed.stdout)["runs"]} == {kept, gone}
    (line,) = listed.stderr.splitlines()
    assert line.startswith(f"runbook: warning: run {gone}: approval of 'switch' expired")
    assert len(project.events("approval_expired", gone)) == 1
