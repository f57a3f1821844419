"""Groups end to end; who may deny and cancel in a strict env; what ``show`` says is next."""

from __future__ import annotations

import pytest

from runbook.config import load_config
from runbook.errors import ApprovalError
from runbook.runner import Runner

from .conftest import RUNBOOK, Project, signers_line

TWO_GATES = (
    RUNBOOK
    + """

@step(approval=True)
def notify_users(prepare):
    _log("notify")
"""
)


def test_a_gate_needs_one_approver_from_each_group(project: Project) -> None:
    project.write('Approval(min=2, allow_self=False, groups=["dba", "sre"])')
    run_id = project.start(actor="alice")
    first = project.approve(run_id, "bob")
    assert first.exit_code == 0, first.output
    assert "waiting for 1 more approver(s) and one approver from group dba" in first.stdout
    assert project.resume(run_id, "bob").exit_code == 3  # not yet
    second = project.approve(run_id, "carol")
    assert second.exit_code == 0, second.output
    assert f"next: runbook resume {run_id}" in second.stdout
    assert project.resume(run_id, "carol").exit_code == 0
    assert project.journal == ["prepare", "switch"]


def test_two_of_one_group_do_not_make_a_quorum_of_two_groups(project: Project) -> None:
    project.write('Approval(min=1, groups=["dba", "sre"])')
    run_id = project.start(actor="alice", env="stage")
    assert project.invoke("approve", run_id, actor="bob").exit_code == 0
    again = project.invoke("approve", run_id, actor="ALICE")  # sre too, and min=1 is met
    assert again.exit_code == 2 and "in none of those groups" in again.stderr
    assert project.invoke("approve", run_id, actor="carol").exit_code == 0
    past = project.invoke("approve", run_id, actor="dan")
    assert past.exit_code == 2 and "past the quorum" in past.stderr


def test_case_and_width_do_not_make_a_second_approver(project: Project) -> None:
    project.write("Approval(min=2)")
    run_id = project.start(actor="alice", env="stage")
    assert project.invoke("approve", run_id, actor="ops").exit_code == 0
    for alias in ("OPS", " Ops ", "ｏｐｓ"):
        done = project.invoke("approve", run_id, actor=alias)
        assert done.exit_code == 2 and "already approved" in done.stderr
    assert len(project.events("approval_refused", run_id)) == 3


def test_in_strict_only_approvers_and_the_initiator_may_deny_or_cancel(project: Project) -> None:
    run_id = project.start(actor="alice")
    mallory = project.keys.private("mallory")
    for command in (["deny", run_id, "--reason", "no"], ["cancel", run_id]):
        done = project.invoke(*command, "--sign", mallory, actor="mallory")
        assert done.exit_code == 2
        assert "only the run's initiator (alice) and its approvers" in done.stderr
    refused = project.events("approval_refused", run_id)
    assert [r["data"]["decision"] for r in refused] == ["denied", "cancelled"]
    assert all(r["data"]["claimed_actor"] == "mallory" for r in refused)
    unsigned = project.invoke("deny", run_id, "--reason", "no", actor="bob")
    assert unsigned.exit_code == 2 and "requires signed decisions" in unsigned.stderr
    denied = project.invoke(
        "deny", run_id, "--reason", "not today", "--sign", project.keys.private("bob"), actor="bob"
    )
    assert denied.exit_code == 0, denied.output
    (event,) = project.events("approval_denied", run_id)
    assert event["actor"] == "bob" and event["data"]["signature"]


def test_the_initiator_may_cancel_a_strict_run_signed(project: Project) -> None:
    run_id = project.start(actor="alice")
    done = project.invoke("cancel", run_id, "--sign", project.keys.private("alice"), actor="alice")
    assert done.exit_code == 0, done.output
    (cancelled,) = project.events("run_cancelled", run_id)
    assert cancelled["actor"] == "alice" and cancelled["data"]["signer"] == "alice"


def test_show_says_resume_when_approvals_are_met(project: Project) -> None:
    run_id = project.start(actor="alice")
    assert project.approve(run_id, "bob").exit_code == 0
    shown = project.invoke("show", run_id).stdout
    assert "gate switch: approved" in shown
    assert "next: runbook approve" not in shown
    assert f"next: runbook resume {run_id}" in shown


def test_show_with_one_of_two_gates_approved_names_the_other(project: Project) -> None:
    project.write("True", source=TWO_GATES)
    run_id = project.start(actor="alice", env="stage")
    assert project.invoke("approve", run_id, "--step", "switch", actor="bob").exit_code == 0
    shown = project.invoke("show", run_id).stdout
    assert "gate switch: approved" in shown
    assert "gate notify_users: waiting for 1 more approver(s)" in shown
    assert f"next: runbook approve {run_id} --step notify_users" in shown
    assert "--step switch\n" not in shown.split("gate notify_users")[1]
    assert f"then: runbook resume {run_id}" in shown


@pytest.mark.parametrize("decision", ["deny", "cancel"])
def test_in_strict_the_signer_is_authorized_not_the_name_the_runner_acts_as(
    project: Project, decision: str
) -> None:
    """mallory's key is in allowed_signers but mallory is no approver: a deny or cancel she
    signs is hers, so it is refused, though the runner's default actor is the initiator."""
    run_id = project.start(actor="alice")
    signers = project.root / "allowed_signers"
    signers.write_text(
        signers.read_text() + signers_line("mallory", project.keys.public("mallory"))
    )
    key = str(project.keys.private("mallory"))
    refused = pytest.raises(ApprovalError, match=r"initiator \(alice\).*mallory is neither")
    config = load_config(project.root)
    with Runner.from_config(config, env="prod", actor="alice") as runner, refused:
        if decision == "deny":
            runner.deny(run_id, reason="no", sign=key)
        else:
            runner.cancel(run_id, sign=key)
    (refused,) = project.events("approval_refused", run_id)
    assert "mallory is neither" in refused["data"]["reason"]
    assert project.events("approval_denied", run_id) == []
    assert project.events("run_cancelled", run_id) == []
    assert "paused" in project.invoke("show", run_id).stdout


def test_approving_a_gate_whose_group_is_not_configured_is_one_line_and_stores_nothing(
    project: Project,
) -> None:
    project.write('Approval(groups=["dbas"])')  # a typo of dba...
    config = project.root / "runbook.toml"
    config.write_text(config.read_text().replace("dba = ", "dbas = "))
    run_id = project.start(actor="alice", env="stage")
    config.write_text(config.read_text().replace("dbas = ", "dba = "))  # ...the config "fixed"
    done = project.invoke("approve", run_id, actor="bob")
    assert done.exit_code == 2
    assert done.stderr == (
        "runbook: error: gate 'switch' names group 'dbas', which the config does not define "
        "([tool.runbook.groups]: dba, sre)\n"
    )
    assert project.events("approval_granted", run_id) == []
    (refused,) = project.events("approval_refused", run_id)
    assert refused["data"]["claimed_actor"] == "bob" and "'dbas'" in refused["data"]["reason"]
    with Runner.from_config(load_config(project.root), env="stage") as runner:
        assert runner.store.approvals(run_id) == []


@pytest.mark.parametrize(
    "gate", ['Approval(groups=["dbas"])', 'Approval(approvers=["group:nope"])']
)
def test_a_gate_naming_an_undefined_group_refuses_the_run_before_any_step(
    project: Project, gate: str
) -> None:
    # groups=: the run paused at a gate nobody could approve; group: approvers failed the run
    # at the gate with a KeyError, after the steps before it had run.
    project.write(gate)
    done = project.invoke("exec", "deploy.py", "--env", "stage", actor="alice")
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith("runbook: error: gate 'switch' names group ")
    assert "which the config does not define ([tool.runbook.groups]: dba, sre)" in done.stderr
    assert project.journal == []
    assert project.events("run_started") == []
