"""Re-verify every signed decision in an audit trail, offline: ``audit verify --signers FILE``.

The hash chain proves the trail was not edited; it cannot prove *who* decided, because anyone
who can rewrite the trail can recompute the chain. A signed decision keeps its SSHSIG signature
in the event (``data.signature``, ``data.signer``, ``data.key_fingerprint``, with
``data.plan_hash`` and ``data.signed_at``); the signed payload is rebuilt from the event's own
fields, so changing the run, step, decision, plan, actor or time breaks the signature, and so
does a signature made with a key that ``allowed_signers`` does not list for that principal.
Years later, all this needs is the trail, the allowed_signers file and ``ssh-keygen``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook import signing
from runbook.identity import normalize

DECISION_KINDS = {
    "approval_granted": "granted",
    "approval_denied": "denied",
    "run_cancelled": "cancelled",
}


@dataclass
class DecisionReport:
    checked: int = 0  # signed decisions verified
    unsigned: int = 0  # human decisions recorded without a signature (claimed identity)
    problems: list[tuple[int | None, str]] = field(default_factory=list)  # (seq, what is wrong)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.problems:
            seq, what = self.problems[0]
            return f"SIGNATURE INVALID: event #{seq}: {what}" + (
                f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            )
        return f"{self.checked} signed decision(s) verified, {self.unsigned} unsigned"


def _signed(event: Any) -> dict[str, Any]:
    """The signed part of an event: its data, or ``run_resumed``'s ``signed_decision``."""
    data = event.data or {}
    if event.kind == "run_resumed":
        return data.get("signed_decision") or {}
    return data


def message_of(event: Any) -> bytes:
    """The payload a decision event's signature must cover, rebuilt from the event."""
    data = _signed(event)
    if event.kind == "run_resumed":
        return signing.payload(
            run_id=event.run_id,
            step=str(data.get("steps", "")),
            decision=str(data.get("decision", "")),
            plan_hash="",
            actor=event.actor,
            at=str(data.get("signed_at", "")),
        )
    return signing.payload(
        run_id=event.run_id,
        step=event.step or "",
        decision=DECISION_KINDS[event.kind],
        plan_hash=str(data.get("plan_hash", "")),
        actor=event.actor,
        at=str(data.get("signed_at", "")),
    )


def verify_event(event: Any, signers: Path) -> str | None:
    """Why this decision event's signature does not prove it; None: it does."""
    data = _signed(event)
    try:
        signed = signing.verify(
            message_of(event),
            str(data["signature"]),
            signers,
            claimed=event.actor,
            at=data.get("signed_at"),
        )
    except signing.SignatureError as exc:
        return f"{event.kind} of {event.step or 'the run'} by {event.actor}: {exc}"
    problems = []
    if normalize(signed.signer) != normalize(str(data.get("signer", signed.signer))):
        problems.append(f"data.signer says {data.get('signer')}, the key is {signed.signer}'s")
    if data.get("key_fingerprint") not in (None, signed.key_fingerprint):
        problems.append(f"data.key_fingerprint is not {signed.key_fingerprint}")
    if problems:
        return f"{event.kind} of {event.step or 'the run'} by {event.actor}: " + "; ".join(problems)
    return None


def verify_decisions(events: Iterable[Any], signers: Path) -> DecisionReport:
    """Check every signed decision in ``events`` against ``signers`` (an allowed_signers file)."""
    signing.read_signers(signers)  # a missing or malformed file is a usage error, up front
    report = DecisionReport()
    required: dict[str, bool] = {}  # run -> its env required approval (run_started says)
    for event in events:
        if event.kind == "run_started":
            required[event.run_id] = (event.data or {}).get("approval_required") is True
            continue
        if event.kind == "run_resumed" and _signed(event).get("signature"):
            report.checked += 1
            problem = verify_event(event, signers)
            if problem:
                report.problems.append((event.seq, problem))
            continue
        if event.kind not in DECISION_KINDS:
            continue
        data = event.data or {}
        if not data.get("signature"):
            if event.kind == "approval_granted" and data.get("auto") and required.get(event.run_id):
                # The engine grants a gate itself only where protection does not require
                # approval: in this run's env a person had to, and no signature says who.
                report.problems.append(
                    (
                        event.seq,
                        f"approval_granted of {event.step} is an automatic grant, but the run's "
                        "env required approval (run_started: approval_required)",
                    )
                )
            elif (
                event.kind != "run_cancelled" and not data.get("auto") and event.actor != "runbook"
            ):
                report.unsigned += 1
            continue
        report.checked += 1
        problem = verify_event(event, signers)
        if problem:
            report.problems.append((event.seq, problem))
    return report
