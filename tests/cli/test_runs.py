"""Store-backed commands: runs, show, approve, deny, resume, cancel."""

from __future__ import annotations

import json

import pytest

from .samples import GATED, GREET


@pytest.fixture
def paused(project, invoke) -> str:
    """A run of GATED paused at ``migrate``; returns its id."""
    path = project.write("gated.py", GATED)
    assert invoke("exec", path).exit_code == 3
    return json.loads(invoke("runs", "--json").stdout)["runs"][0]["run_id"]


def test_runs_lists_newest_first_and_filters(project, invoke, paused):
    path = project.write("greet.py", GREET)
    assert invoke("exec", path).exit_code == 0
    result = invoke("runs")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RUN", "STATUS", "ENV", "ACTOR", "RUNBOOK", "STARTED", "UPDATED"]
    assert "succeeded" in lines[1] and "greet.py" in lines[1]
    assert paused in lines[2] and "paused" in lines[2] and "gated.py" in lines[2]
    only = json.loads(invoke("runs", "--status", "paused", "--json").stdout)["runs"]
    assert [r["run_id"] for r in only] == [paused]
    assert len(json.loads(invoke("runs", "--limit", "1", "--json").stdout)["runs"]) == 1


def test_runs_empty_and_bad_status(project, invoke):
    assert invoke("runs").stdout == "no runs\n"
    result = invoke("runs", "--status", "exploded")
    assert result.exit_code == 2


def test_show_steps_and_next_commands(project, invoke, paused):
    result = invoke("show", paused)
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith(f"run {paused}: paused\n")
    assert "actor    tester" in out
    assert "prepare  succeeded" in out and '{"ok": true}' in out
    assert "migrate  awaiting approval" in out
    assert f"next: runbook approve {paused} --step migrate" in out


def test_show_json_and_unknown_run(project, invoke, paused):
    data = json.loads(invoke("show", paused, "--json").stdout)
    assert data["run"]["status"] == "paused"
    assert data["steps"]["prepare"]["output"] == {"ok": True}
    result = invoke("show", "no-such-run")
    assert result.exit_code == 2
    assert "no-such-run" in result.stderr and result.stdout == ""


def test_approve_then_resume_finishes_the_run(project, invoke, paused):
    result = invoke("approve", paused, "--as", "bob", "--comment", "looks good")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"approved migrate of run {paused} as bob (1/1 approvals)\nnext: runbook resume {paused}\n"
    )
    result = invoke("resume", paused)
    assert result.exit_code == 0, result.output
    assert "resumed" in result.stdout.splitlines()[0]
    assert "✓ migrate" in result.stdout
    assert (project.root / "migrated").exists()
    shown = invoke("show", paused).stdout
    assert "  migrate  granted by bob: looks good" in shown
    # Nothing left to resume.
    again = invoke("resume", paused)
    assert again.exit_code == 2 and "has ended (succeeded)" in again.stderr


def test_a_gate_that_ran_after_approval_no_longer_says_awaiting_approval(project, invoke, paused):
    """The pause's reason belongs to the pause: once the gate's step ran, ``show`` gives its
    output, as for any succeeded step, and the stored row has no reason left."""
    assert invoke("approve", paused).exit_code == 0
    assert invoke("resume", paused).exit_code == 0
    migrate = json.loads(invoke("show", paused, "--json").stdout)["steps"]["migrate"]
    assert (migrate["status"], migrate["reason"]) == ("succeeded", None)
    row = [line for line in invoke("show", paused).stdout.splitlines() if "  migrate  succ" in line]
    assert row and row[0].endswith('{"migrated": true}'), row


def test_approve_errors(project, invoke, paused):
    result = invoke("approve", paused, "--step", "prepare")
    assert result.exit_code == 2
    assert "not awaiting approval" in result.stderr
    assert invoke("approve", "nope").exit_code == 2


def test_resume_before_approval_stays_paused(project, invoke, paused):
    result = invoke("resume", paused, "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["status"] == "paused"


def test_resume_flags_exclude_each_other(project, invoke, paused):
    result = invoke("resume", paused, "--retry-interrupted", "--skip-interrupted")
    assert result.exit_code == 2


def test_deny_rolls_back(project, invoke, paused):
    result = invoke("deny", paused, "--reason", "not today", "--as", "carol")
    assert result.exit_code == 0, result.output
    assert "↺ prepare" in result.stdout and "rolled back" in result.stdout
    assert (project.root / "unprepared").exists()
    assert not (project.root / "migrated").exists()
    assert "  migrate  denied by carol: not today" in invoke("show", paused).stdout


def test_deny_needs_a_reason(project, invoke, paused):
    result = invoke("deny", paused)
    assert result.exit_code == 2
    assert "--reason" in result.stderr


def test_cancel_a_paused_run(project, invoke, paused):
    result = invoke("cancel", paused, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "cancelled"
    assert data["steps"]["prepare"]["status"] == "rolled_back"
    assert (project.root / "unprepared").exists()
    again = invoke("cancel", paused)
    assert again.exit_code == 2 and "has ended (cancelled)" in again.stderr
