"""Decisions on stored runs: approve, deny, cancel, checked, proven and audited in one place.

Every decision goes through :meth:`Decisions.prove` (who is deciding: the claimed actor, or in a
``signers`` env the principal a fresh SSHSIG signature verifies as) and every refusal through
:meth:`Decisions.refuse`, which records ``approval_refused`` with the claimed actor and the
reason before the command exits 2. ``DurableRuns`` (runbook/durable.py) calls in here, and this
module uses only its public helpers (``recorder_for``, ``load_run``, ``actor``); the engine-side
counting of decisions is :class:`runbook.approval_policy.ApprovalPolicy`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from runbook import result as R
from runbook import signing
from runbook.approval_policy import gate_state
from runbook.approvals import Rules, counted, undefined_group, waiting_gate
from runbook.envs import EnvRules
from runbook.errors import ApprovalError, ConfigError, RunbookError, UsageError
from runbook.identity import normalize
from runbook.store.base import ApprovalRecord, RunRecord

if TYPE_CHECKING:
    from runbook.durable import DurableRuns

DECISION_WORDS = {"granted": "approve", "denied": "deny", "cancelled": "cancel"}


def signing_key(explicit: str | Path | None) -> str | None:
    """``--sign KEY``, else ``RUNBOOK_SIGNING_KEY``."""
    if explicit:
        return str(explicit)
    return os.environ.get(signing.SIGNING_KEY_ENV, "").strip() or None


def _given(key: str | Path | None) -> str | None:
    """A ``--sign`` given where nothing verifies it: kept only so ``prove`` can refuse it."""
    return None if key is None else str(key)


def verify_record(record: ApprovalRecord, signers: Path, plan_hash: str) -> str | None:
    """Why a recorded decision's signature does not prove it for this plan; None: it does."""
    data = record.data
    if not data.get("signature"):
        return "it is not signed"
    message = signing.payload(
        run_id=record.run_id,
        step=record.step,
        decision=record.decision,
        plan_hash=plan_hash,
        actor=record.actor,
        at=str(data.get("signed_at", "")),
    )
    try:
        signed = signing.verify(
            message, data["signature"], signers, claimed=record.actor, at=data.get("signed_at")
        )
    except signing.SignatureError as exc:
        return str(exc)
    if normalize(signed.signer) != normalize(record.actor):
        return f"signed by {signed.signer}, recorded as {record.actor}"
    return None


class Decisions:
    """approve/deny/cancel of the stored runs of one ``DurableRuns`` (a runner's providers)."""

    def __init__(self, durable: DurableRuns) -> None:
        self.durable = durable
        self.envs = durable.envs
        self.store = durable.providers.require_store()
        self.clock = durable.providers.clock

    # -- refusals and proof ----------------------------------------------------------------------

    def refuse(
        self,
        record: RunRecord,
        decision: str,
        step: str | None,
        claimed: str,
        reason: str,
        error: type[RunbookError] = ApprovalError,
    ) -> NoReturn:
        """Audit the refusal (the claimed actor, the reason), then raise: the CLI exits 2."""
        self.durable.recorder_for(record).emit(
            "approval_refused",
            step,
            {"decision": decision, "claimed_actor": claimed, "reason": reason},
            actor=claimed,
        )
        raise error(reason)

    def prove(
        self,
        record: RunRecord,
        env: EnvRules,
        *,
        decision: str,
        step: str,
        plan_hash: str,
        claimed: str | None,
        key: str | None,
    ) -> tuple[str, dict[str, Any]]:
        """Who is deciding, and the data that binds the decision (plan hash, signature)."""
        at = self.clock.now().isoformat()
        fallback = claimed or self.durable.actor()
        data: dict[str, Any] = {"plan_hash": plan_hash, "signed_at": at}
        word = DECISION_WORDS.get(decision, decision)
        if env.signers is None:
            if key is not None:
                self.refuse(
                    record,
                    decision,
                    step or None,
                    fallback,
                    f"env {env.name!r} has no `signers` file, so nothing would verify a "
                    "signature here: drop --sign",
                )
            return fallback, data
        if key is None:
            self.refuse(
                record,
                decision,
                step or None,
                fallback,
                f"env {env.name!r} requires signed decisions (signers = {env.signers}): "
                f"{word} with --sign KEY or set {signing.SIGNING_KEY_ENV}",
            )
        if not env.signers.is_file():
            self.refuse(
                record,
                decision,
                step or None,
                fallback,
                f"env {env.name!r}: signers file {env.signers} does not exist",
            )
        try:
            signed = signing.sign_as(
                lambda principal: signing.payload(
                    run_id=record.run_id,
                    step=step,
                    decision=decision,
                    plan_hash=plan_hash,
                    actor=principal,
                    at=at,
                ),
                key,
                env.signers,
                claimed,
            )
        except signing.SignatureError as exc:
            self.refuse(record, decision, step or None, fallback, str(exc))
        data.update(
            signature=signed.signature, signer=signed.signer, key_fingerprint=signed.key_fingerprint
        )
        return signed.signer, data

    # -- approve ---------------------------------------------------------------------------------

    def approve(
        self,
        run_id: str,
        *,
        step: str | None = None,
        actor: str | None = None,
        comment: str = "",
        sign: str | Path | None = None,
    ) -> dict[str, Any]:
        """Record an approval of the gate's current plan; say what the gate still waits for."""
        from runbook.expiry import apply_expired

        durable = self.durable
        record = self.store.get_run(run_id)
        claimed = actor or durable.actor()
        expired = apply_expired(durable, record)
        if expired:
            self.refuse(record, "granted", step, claimed, expired[0])
        if record.status != R.PAUSED:
            self.refuse(
                record, "granted", step, claimed, f"run {run_id} is {record.status}, not paused"
            )
        rb = durable.load_run(record)
        if rb.sha256 != record.runbook_sha256:
            self.refuse(
                record,
                "granted",
                step,
                claimed,
                f"drift: {record.runbook_path} changed since run {run_id} started (sha256 "
                f"{record.runbook_sha256[:12]}, now {rb.sha256[:12]}); approving it would "
                "approve code that is not what runs",
            )
        try:
            steps = self.store.get_steps(record.run_id)
            waiting = [n for n, s in steps.items() if s.status == R.AWAITING_APPROVAL]
            name = waiting_gate(record.run_id, waiting, step)
        except ApprovalError as exc:
            self.refuse(record, "granted", step, claimed, str(exc))
        approval = rb.steps[name].options.approval
        assert approval is not None
        state = gate_state(record.options, name)
        if state is None:
            self.refuse(
                record,
                "granted",
                name,
                claimed,
                f"gate {name!r} of run {run_id} has no recorded plan (paused by an older "
                f"runbook): `runbook resume {run_id}` puts it up for approval again",
            )
        env = self.envs.rules(record.env)
        undefined = undefined_group(approval, env.approvers, env.groups, name)
        if undefined:
            self.refuse(record, "granted", name, claimed, undefined, ConfigError)
        rules = Rules(approval, record.actor, env.approvers, env.groups, run_id, name)
        digest = state["plan_hash"]
        who, data = self.prove(
            record,
            env,
            decision="granted",
            step=name,
            plan_hash=digest,
            claimed=actor,
            key=signing_key(sign) if env.signers else _given(sign),
        )
        prior = counted(self.store.approvals(run_id, name), rules, digest, env.signers)
        reason = rules.refusal(who, prior)
        if reason:
            self.refuse(record, "granted", name, who, reason)
        data.update(rules=approval.rules(), runbook_sha256=rb.sha256)
        granted = [*prior, who]
        satisfied = rules.satisfied(granted)
        event = {
            "comment": comment,
            "approver": who,
            "approvals": len({normalize(g) for g in granted}),
            "needed": approval.min,
            "satisfied": satisfied,
            **{k: v for k, v in data.items() if k not in ("rules", "runbook_sha256")},
        }
        # Audited before it is stored: a trail that refuses the event leaves no approval that
        # counts and was never audited (a crash in between leaves an event and no approval).
        durable.recorder_for(record).emit("approval_granted", name, event, actor=who)
        self.store.add_approval(
            ApprovalRecord(run_id, name, who, "granted", comment, self.clock.now(), False, data)
        )
        return {
            "run_id": run_id,
            "step": name,
            "actor": who,
            "approvers": sorted({normalize(g) for g in granted}),
            "needed": approval.min,
            "satisfied": satisfied,
            "missing": rules.missing(granted),
            "signed": "signature" in data,
        }

    # -- resume of interrupted steps ----------------------------------------------------------

    def prove_interrupts(
        self,
        record: RunRecord,
        steps: Sequence[str],
        choice: str,
        actor: str | None,
        key: str | Path | None,
    ) -> tuple[str, dict[str, Any]]:
        """``resume --retry-interrupted/--skip-interrupted`` is a decision too: in a ``signers``
        env it is signed (``decision`` ``retry-interrupted``/``skip-interrupted``, ``step`` the
        interrupted steps joined by commas, no plan). Returns who decided and the signed data
        (empty where claimed identity is enough)."""
        env = self.envs.rules(record.env)
        if env.signers is None:
            return actor or self.durable.actor(), {}
        decision = f"{choice}-interrupted"
        who, data = self.prove(
            record,
            env,
            decision=decision,
            step=",".join(steps),
            plan_hash="",
            claimed=actor,
            key=signing_key(key),
        )
        return who, {**data, "decision": decision, "steps": ",".join(steps)}

    # -- deny and cancel -------------------------------------------------------------------------

    def authorize_settle(
        self,
        record: RunRecord,
        rb: Any,
        *,
        decision: str,
        actor: str | None,
        key: str | Path | None,
    ) -> tuple[str, dict[str, dict[str, Any]]]:
        """Check a deny/cancel: a ``signers`` env needs it signed (one signature per waiting
        gate), and strict envs allow it to the approvers and initiator only, judged on who is
        proven to decide (the signature's principal), not on the name claimed. Returns who
        decided and the data to record per gate."""
        env = self.envs.rules(record.env)
        claimed = actor or self.durable.actor()
        steps = self.store.get_steps(record.run_id)
        waiting = [n for n, s in steps.items() if s.status == R.AWAITING_APPROVAL]
        first = waiting[0] if waiting else None
        strict = env.protection.level == "strict"
        rules: list[Rules] = []
        if strict:
            gates = [n for n in rb.steps if rb.steps[n].options.approval is not None]
            considered = [n for n in waiting or gates if n in rb.steps]
            for name in considered:
                undefined = undefined_group(
                    rb.steps[name].options.approval, env.approvers, env.groups, name
                )
                if undefined:
                    self.refuse(record, decision, first, claimed, undefined, ConfigError)
            rules = [
                Rules(rb.steps[n].options.approval, record.actor, env.approvers, env.groups)
                for n in considered
            ] or [Rules(_any_gate(), record.actor, env.approvers, env.groups)]
        if strict and (actor or env.signers is None):
            # A name given (or, without signers, the one recorded) is judged before signing;
            # a signature's principal is judged again below once it is proven.
            self._may_settle(record, env, rules, decision, first, claimed, claimed)
        proofs: dict[str, dict[str, Any]] = {}
        who = claimed
        targets = waiting if decision == "denied" else [""]
        for name in targets or [""]:  # a deny with no gate waiting is proven all the same
            state = gate_state(record.options, name) if name else None
            who, data = self.prove(
                record,
                env,
                decision=decision,
                step=name,
                plan_hash=(state or {}).get("plan_hash", ""),
                claimed=actor,
                key=signing_key(key) if env.signers else _given(key),
            )
            if name in targets:
                proofs[name] = data
        if strict:
            self._may_settle(record, env, rules, decision, first, claimed, who)
        return who, proofs

    def _may_settle(
        self,
        record: RunRecord,
        env: EnvRules,
        rules: Sequence[Rules],
        decision: str,
        step: str | None,
        claimed: str,
        who: str,
    ) -> None:
        """Refuse (audited) a strict env's deny/cancel by ``who``: not initiator nor approver."""
        if not any(r.may_decide(who) for r in rules):
            self.refuse(
                record,
                decision,
                step,
                claimed,
                f"in env {env.name!r} (strict) only the run's initiator ({record.actor}) and "
                f"its approvers may {DECISION_WORDS.get(decision, decision)} it; "
                f"{who} is neither",
            )


def _any_gate() -> Any:
    from runbook.markers import Approval

    return Approval()


def gate_status(durable: DurableRuns, record: RunRecord, rb: Any, step: str) -> tuple[bool, str]:
    """Whether a waiting gate's current plan has its approvals, and what it still waits for.

    Counts the approvals recorded for the plan that is up for approval; resume re-checks them
    (signatures, drift) before the step runs.
    """
    approval = rb.steps[step].options.approval
    if approval is None:
        return True, "nothing"
    env = durable.envs.rules(record.env)
    rules = Rules(approval, record.actor, env.approvers, env.groups)
    state = gate_state(record.options, step) or {}
    granted = counted(
        durable.providers.require_store().approvals(record.run_id, step),
        rules,
        state.get("plan_hash"),
        env.signers,
    )
    return rules.satisfied(granted), rules.missing(granted)


def can_approve(durable: DurableRuns, run_id: str, step: str, actor: str) -> tuple[str, str | None]:
    """Who would be approving ``step`` now, and why they could not (None: they could).

    For the prompt at a gate: in a ``signers`` env the approver is the principal of the
    ``RUNBOOK_SIGNING_KEY``, so the same four-eyes rules apply to the proven name.
    """
    store = durable.providers.require_store()
    record = store.get_run(run_id)
    try:
        rb = durable.load_run(record)
    except UsageError as exc:
        return actor, str(exc)
    approval = rb.steps[step].options.approval
    if approval is None:
        return actor, f"{step!r} is not a gate"
    env = durable.envs.rules(record.env)
    if env.signers is not None:
        key = signing_key(None)
        if key is None:
            return actor, (
                f"env {env.name!r} requires signed decisions: "
                f"`runbook approve {run_id} --step {step} --sign KEY`"
            )
        try:
            actor = signing.principal_of(signing.public_key_blob(key), env.signers, None)
        except signing.SignatureError as exc:
            return actor, str(exc)
    state = gate_state(record.options, step) or {}
    rules = Rules(approval, record.actor, env.approvers, env.groups, run_id, step)
    prior = counted(store.approvals(run_id, step), rules, state.get("plan_hash"), env.signers)
    return actor, rules.refusal(actor, prior)
