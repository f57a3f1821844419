"""Proven identity: in a ``signers`` env every decision is an SSHSIG signature by a listed key."""

from __future__ import annotations

import json
import os
import subprocess

from runbook.audit.events import AuditEvent
from runbook.cli import cli
from runbook.proofs import message_of

from .conftest import Project


def refusals(project: Project, run_id: str) -> list[dict]:
    return project.events("approval_refused", run_id)


def test_an_unsigned_approval_is_refused_in_a_signers_env(project: Project) -> None:
    run_id = project.start()
    done = project.invoke("approve", run_id, actor="bob")
    assert done.exit_code == 2
    assert "requires signed decisions" in done.stderr and "--sign KEY" in done.stderr
    (refused,) = refusals(project, run_id)
    assert refused["actor"] == "bob" and refused["data"]["claimed_actor"] == "bob"
    assert "requires signed decisions" in refused["data"]["reason"]
    assert project.events("approval_granted", run_id) == []


def test_a_listed_approvers_signature_is_accepted_and_kept_in_the_audit(project: Project) -> None:
    run_id = project.start()
    done = project.approve(run_id, "bob", "--comment", "reviewed")
    assert done.exit_code == 0, done.output
    assert f"approved switch of run {run_id} as bob (signed) (1/1 approvals)" in done.stdout
    assert f"next: runbook resume {run_id}" in done.stdout
    (granted,) = project.events("approval_granted", run_id)
    data = granted["data"]
    assert granted["actor"] == "bob" and data["signer"] == "bob"
    assert data["signature"].startswith("-----BEGIN SSH SIGNATURE-----")
    assert data["key_fingerprint"].startswith("SHA256:")
    (requested,) = project.events("approval_requested", run_id)
    assert data["plan_hash"] == requested["data"]["plan_hash"]
    resumed = project.resume(run_id, "bob")
    assert resumed.exit_code == 0, resumed.output
    assert project.journal == ["prepare", "switch"]


def test_the_signature_verifies_with_ssh_keygen_itself(project: Project, tmp_path) -> None:
    """Format compatibility: OpenSSH verifies what runbook signed, from the audit event alone."""
    run_id = project.start()
    assert project.approve(run_id, "carol").exit_code == 0
    (granted,) = project.events("approval_granted", run_id)
    message = message_of(AuditEvent.from_dict(granted))
    assert json.loads(message) == {
        "run_id": run_id,
        "step": "switch",
        "decision": "granted",
        "plan_hash": granted["data"]["plan_hash"],
        "actor": "carol",
        "at": granted["data"]["signed_at"],
    }
    sig = tmp_path / "decision.sig"
    sig.write_text(granted["data"]["signature"] + "\n")
    done = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(project.keys.signers),
            "-I",
            "carol",
            "-n",
            "runbook",
            "-s",
            str(sig),
        ],
        input=message,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b'Good "runbook" signature for carol' in done.stdout


def test_an_approvers_key_with_another_principals_as_is_refused(project: Project) -> None:
    run_id = project.start()
    done = project.invoke(
        "approve", run_id, "--as", "carol", "--sign", project.keys.private("bob"), actor="carol"
    )
    assert done.exit_code == 2
    assert "bob's" in done.stderr and "--as carol disagrees" in done.stderr
    (refused,) = refusals(project, run_id)
    assert refused["data"]["claimed_actor"] == "carol"
    assert project.events("approval_granted", run_id) == []


def test_a_key_nobody_lists_is_refused(project: Project) -> None:
    run_id = project.start()
    done = project.approve(run_id, "bob", key="mallory")
    assert done.exit_code == 2 and "is not in" in done.stderr
    assert len(refusals(project, run_id)) == 1


def test_the_initiator_is_refused_under_allow_self_false_even_when_signed(
    project: Project,
) -> None:
    run_id = project.start(actor="alice")
    done = project.approve(run_id, "alice")
    assert done.exit_code == 2
    assert f"alice started run {run_id} and cannot approve 'switch'" in done.stderr
    (refused,) = refusals(project, run_id)
    assert refused["actor"] == "alice" and "four eyes" in refused["data"]["reason"]


def test_the_signing_key_may_come_from_the_environment(project: Project) -> None:
    run_id = project.start()
    done = project.cli.invoke(
        cli,
        ["approve", run_id],
        env={"RUNBOOK_ACTOR": None, "RUNBOOK_SIGNING_KEY": str(project.keys.private("bob"))},
    )
    assert done.exit_code == 0, done.output
    assert "as bob (signed)" in done.stdout  # the principal, not the shell's git user


def test_an_ssh_agent_key_signs_through_its_public_half(project: Project, tmp_path) -> None:
    socket = tmp_path / "agent.sock"
    started = subprocess.run(
        ["ssh-agent", "-a", str(socket), "-s"], capture_output=True, text=True, timeout=30
    )
    pid = int(started.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        env = {"SSH_AUTH_SOCK": str(socket)}
        subprocess.run(
            ["ssh-add", "-q", str(project.keys.private("carol"))],
            env={**os.environ, **env},
            check=True,
            timeout=30,
            capture_output=True,
        )
        only_pub = tmp_path / "carol-agent.pub"  # no private key file next to it
        only_pub.write_text(project.keys.public("carol").read_text())
        run_id = project.start()
        done = project.cli.invoke(
            cli,
            ["approve", run_id, "--sign", str(only_pub)],
            env={**env, "RUNBOOK_ACTOR": "carol", "RUNBOOK_SIGNING_KEY": None},
        )
        assert done.exit_code == 0, done.output
        assert "as carol (signed)" in done.stdout
    finally:
        os.kill(pid, 15)


def test_retry_or_skip_of_an_interrupted_step_is_a_signed_decision(project: Project) -> None:
    from runbook.store.base import StepRecord
    from runbook.store.sqlite import SqliteStore

    run_id = project.start()
    with SqliteStore(project.root / ".runbook" / "runbook.db") as db:  # as if killed mid-step
        db.save_step(StepRecord(run_id, "prepare", "running", attempts=1))
        db.update_run(run_id, status="running", pid=2**22 + 12345)
    unsigned = project.resume(run_id, "bob", "--skip-interrupted")
    assert unsigned.exit_code == 2 and "requires signed decisions" in unsigned.stderr
    signed = project.resume(
        run_id, "bob", "--skip-interrupted", "--sign", project.keys.private("bob")
    )
    assert signed.exit_code == 0, signed.output
    assert "switch" not in project.journal  # it needed prepare, which is now "not run"
    (resumed,) = project.events("run_resumed", run_id)
    decision = resumed["data"]["signed_decision"]
    assert resumed["actor"] == "bob" and decision["decision"] == "skip-interrupted"
    assert decision["steps"] == "prepare" and decision["signer"] == "bob"
    checked = project.invoke(
        "audit",
        "verify",
        "--signers",
        project.keys.signers,
        "--sink",
        f"jsonl://{project.root / '.runbook' / 'audit.jsonl'}",
    )
    assert checked.exit_code == 0 and "1 signed decision(s) verified" in checked.stdout


def test_sign_is_refused_where_nothing_would_verify_it(project: Project) -> None:
    run_id = project.start(env="stage")
    done = project.approve(run_id, "bob")
    assert done.exit_code == 2 and "no `signers` file" in done.stderr
    assert project.invoke("approve", run_id, actor="bob").exit_code == 0
