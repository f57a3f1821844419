"""``runbook audit verify --signers FILE`` re-verifies every recorded decision, offline."""

from __future__ import annotations

import json
from dataclasses import replace

from runbook import signing
from runbook.audit.events import AuditEvent
from runbook.audit.jsonl import JsonlSink

from .conftest import Project


def trail(project: Project) -> str:
    return str(project.root / ".runbook" / "audit.jsonl")


def verify(project: Project, *extra: str):
    return project.invoke(
        "audit",
        "verify",
        "--signers",
        project.keys.signers,
        "--sink",
        f"jsonl://{trail(project)}",
        *extra,
    )


def test_a_genuine_trail_verifies_every_signed_decision(project: Project) -> None:
    run_id = project.start()
    assert project.approve(run_id, "bob").exit_code == 0
    assert project.resume(run_id, "bob").exit_code == 0
    other = project.start()
    assert (
        project.invoke(
            "deny", other, "--reason", "no", "--sign", project.keys.private("carol"), actor="carol"
        ).exit_code
        == 0
    )
    done = verify(project)
    assert done.exit_code == 0, done.output
    assert "2 signed decision(s) verified" in done.stdout


def _rewrite(project: Project, change) -> None:
    """Rewrite the whole trail with a valid chain: what someone with the file could do."""
    path = project.root / ".runbook" / "audit.jsonl"
    events = [AuditEvent.from_dict(json.loads(line)) for line in path.read_text().splitlines()]
    path.unlink()
    sink = JsonlSink.open(f"jsonl://{path}")
    for event in events:
        sink.append(replace(change(event), seq=None, prev_hash=None, hash=None))
    sink.close()


def test_a_forged_signature_is_found_although_the_chain_is_intact(project: Project) -> None:
    run_id = project.start()
    assert project.approve(run_id, "carol").exit_code == 0
    (real,) = project.events("approval_granted", run_id)
    # mallory makes a signature of her own over bob's name and puts it in the trail.
    forged_data = dict(real["data"], signer="bob")
    message = signing.payload(
        run_id=run_id,
        step="switch",
        decision="granted",
        plan_hash=real["data"]["plan_hash"],
        actor="bob",
        at=real["data"]["signed_at"],
    )
    forged_data["signature"] = signing.sign(message, project.keys.private("mallory"))

    def forge(event: AuditEvent) -> AuditEvent:
        if event.kind == "approval_granted":
            return replace(event, actor="bob", data=forged_data)
        return event

    _rewrite(project, forge)
    chain_only = project.invoke("audit", "verify", "--sink", f"jsonl://{trail(project)}")
    assert chain_only.exit_code == 0  # the chain alone cannot tell
    done = verify(project)
    assert done.exit_code == 1
    assert "SIGNATURE INVALID" in done.output and f"#{real['seq']}" in done.output
    assert "is not in" in done.output  # mallory's key is not listed


def test_a_decision_edited_after_signing_is_found(project: Project) -> None:
    run_id = project.start()
    assert project.approve(run_id, "bob").exit_code == 0

    def edit(event: AuditEvent) -> AuditEvent:
        if event.kind == "approval_granted":  # claim it approved another plan
            return replace(event, data={**event.data, "plan_hash": "f" * 64})
        return event

    _rewrite(project, edit)
    done = verify(project, "--json")
    assert done.exit_code == 1
    (result,) = json.loads(done.stdout)["sinks"]
    assert result["status"] == "tampered" and "does not verify" in result["problem"]


def test_a_signed_approval_rewritten_as_an_automatic_grant_is_found(project: Project) -> None:
    # An unsigned auto grant was not counted and not reported: a rewrite that turns carol's
    # signed approval into the engine's own grant hid who opened the gate (or that nobody did).
    run_id = project.start()
    assert project.approve(run_id, "carol").exit_code == 0
    (started,) = project.events("run_started", run_id)
    assert started["data"]["approval_required"] is True  # prod: a person must approve

    def automatic(event: AuditEvent) -> AuditEvent:
        if event.kind == "approval_granted":
            data = {"plan_hash": event.data["plan_hash"], "auto": True}
            return replace(event, actor="runbook", data=data)
        return event

    _rewrite(project, automatic)
    done = verify(project)
    assert done.exit_code == 1, done.output
    assert "is an automatic grant, but the run's env required approval" in done.output


def test_an_automatic_grant_where_approval_is_not_required_is_no_problem(project: Project) -> None:
    (project.root / "runbook.toml").write_text(
        (project.root / "runbook.toml").read_text() + '\n[env.dev]\nprotection = "none"\n'
    )
    done = project.invoke("exec", "deploy.py", "--env", "dev", actor="alice")
    assert done.exit_code == 0, done.output
    (granted,) = project.events("approval_granted")
    assert granted["data"]["auto"] is True
    assert verify(project).exit_code == 0
