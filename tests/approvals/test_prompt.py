"""The prompt at a gate applies exactly approve's rules and is not offered to who cannot."""

from __future__ import annotations

import json

import pytest

from .conftest import Project


@pytest.fixture(autouse=True)
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runbook.cli.exec_.interactive", lambda: True)


def run(project: Project, env: str, actor: str, key: str | None, answer: str = "y\n"):
    from runbook.cli import cli

    signing = str(project.keys.private(key)) if key else None
    return project.cli.invoke(
        cli,
        ["exec", "deploy.py", "--env", env],
        input=answer,
        env={"RUNBOOK_ACTOR": actor, "RUNBOOK_SIGNING_KEY": signing},
    )


def test_not_offered_to_the_initiator_under_allow_self_false_even_with_a_key(
    project: Project,
) -> None:
    done = run(project, "prod", "alice", "alice")
    assert done.exit_code == 3
    assert "Approve" not in done.output and "cannot approve 'switch'" in done.stderr
    assert project.events("approval_granted") == []


def test_not_offered_without_a_signing_key_in_a_signers_env(project: Project) -> None:
    project.write("Approval()")
    done = run(project, "prod", "bob", None)
    assert done.exit_code == 3
    assert "Approve" not in done.output and "--sign KEY" in done.stderr


def test_a_signed_answer_at_the_prompt_counts_as_the_keys_principal(project: Project) -> None:
    project.write("Approval(allow_self=False)")
    done = run(project, "prod", "alice", "bob")  # bob at alice's terminal, with his own key
    assert done.exit_code == 0, done.output
    assert "as bob?" in done.output
    (granted,) = project.events("approval_granted")
    assert granted["actor"] == "bob" and granted["data"]["signer"] == "bob"
    assert project.journal == ["prepare", "switch"]


def test_strict_without_signers_does_not_let_the_initiator_approve_in_passing(
    project: Project,
) -> None:
    project.write("Approval()")
    done = run(project, "claimed", "alice", None)
    assert done.exit_code == 3
    assert "Approve" not in done.output and "approving your own run" in done.stderr
    assert project.invoke("approve", _run_id(project), actor="bob").exit_code == 0


@pytest.mark.parametrize("started_as", ["ALICE", "Alice ", "ａｌｉｃｅ"])
def test_strict_does_not_let_the_initiator_approve_in_passing_under_another_spelling(
    project: Project, started_as: str
) -> None:
    # alice starts the run as ALICE; her key's principal is "alice": one person, her own run.
    project.write("Approval()")
    done = run(project, "prod", started_as, "alice")
    assert done.exit_code == 3, done.output
    assert "Approve" not in done.output and "approving your own run" in done.stderr
    assert project.events("approval_granted") == []
    assert "switch" not in project.journal


def _run_id(project: Project) -> str:
    return json.loads(project.invoke("runs", "--json").stdout)["runs"][0]["run_id"]


def test_a_two_person_gate_is_not_resumed_after_one_answer(project: Project) -> None:
    project.write("Approval(min=2)")
    done = run(project, "stage", "alice", None)
    assert done.exit_code == 3
    assert len(project.events("approval_granted")) == 1
    assert "switch" not in project.journal


def test_the_run_header_says_whether_identities_are_proven(project: Project) -> None:
    project.write("Approval()")
    claimed = project.invoke("exec", "deploy.py", "--env", "claimed", actor="alice")
    assert "identities claimed, not proven" in claimed.stdout
    signed = project.invoke("exec", "deploy.py", "--env", "prod", actor="alice")
    assert "signed approvals" in signed.stdout and "not proven" not in signed.stdout
    stage = project.invoke("exec", "deploy.py", "--env", "stage", actor="alice")
    assert "signed" not in stage.stdout and "claimed" not in stage.stdout
