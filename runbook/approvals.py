"""Approval gates: who may decide, when a gate is satisfied, and what an approval is bound to.

Two halves. :class:`Rules` is the pure decision for one gate in one env (four eyes, approver
lists and groups, the quorum), with identities compared after :func:`runbook.identity.normalize`.
:class:`ApprovalPolicy` is what the engine asks each time a gated step is reached (the first
run and every resume): it builds the gate's plan from live values, pauses again when the plan
drifted from the one that was put up for approval, and counts only decisions that are still
valid *as used*: bound to this plan, by someone the rules (as they are now, and as they were
when approved) allow, and, in a ``signers`` env, whose signature still verifies.
The ``approve``/``deny``/``cancel`` side (refusals, signatures) is in runbook/decisions.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from runbook import plan as P
from runbook.errors import ApprovalError
from runbook.identity import GROUP_PREFIX, distinct, expand, member_of, members, normalize, same
from runbook.markers import Approval
from runbook.protection import Protection
from runbook.store.base import ApprovalRecord, RunStore

log = logging.getLogger("runbook")
GATES_KEY = "gates"  # RunRecord.options[GATES_KEY][step]: the plan put up for approval


def granted_by(records: Sequence[ApprovalRecord]) -> set[str]:
    """The distinct people (normalised) who granted."""
    return distinct(r.actor for r in records if r.decision == "granted")


@dataclass(frozen=True)
class Rules:
    """One gate's rules in one env. Pure: no store, no clock, no I/O."""

    approval: Approval
    initiator: str
    env_approvers: tuple[str, ...] = ()
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)
    run_id: str = ""  # for messages only
    step: str = ""

    def named(self) -> tuple[str, ...]:
        """The approvers as configured, ``group:NAME`` expanded (empty: anyone)."""
        return expand(self.approval.approvers or self.env_approvers, self.groups)

    def allowed(self) -> set[str] | None:
        """Normalised names who may approve; None: anyone (the groups still have to be met)."""
        named = self.named()
        if not named:
            return None
        out = distinct(named)
        for group in self.approval.groups:
            out |= distinct(members(group, self.groups))
        return out

    def uncovered(self, granted: Sequence[str]) -> list[str]:
        """The groups of ``Approval(groups=...)`` that no granter belongs to yet."""
        return [
            g
            for g in self.approval.groups
            if not any(member_of(a, g, self.groups) for a in granted)
        ]

    def satisfied(self, granted: Sequence[str]) -> bool:
        return len(distinct(granted)) >= self.approval.min and not self.uncovered(granted)

    def missing(self, granted: Sequence[str]) -> str:
        """What the gate still waits for, in words."""
        more = self.approval.min - len(distinct(granted))
        parts = [f"{more} more approver(s)"] if more > 0 else []
        uncovered = self.uncovered(granted)
        if uncovered:
            parts.append("one approver from group " + ", one from group ".join(uncovered))
        return " and ".join(parts) or "nothing"

    def may_approve(self, actor: str) -> str | None:
        """Why ``actor`` can never approve this gate, or None (independent of who approved)."""
        who = normalize(actor)
        if not self.approval.allow_self and same(actor, self.initiator):
            return (
                f"{actor} started run {self.run_id} and cannot approve {self.step!r} "
                "(four eyes: allow_self=False)"
            )
        allowed = self.allowed()
        if allowed is not None and who not in allowed:
            listed = ", ".join([*self.named(), *(f"group:{g}" for g in self.approval.groups)])
            return f"{actor} may not approve {self.step!r}; approvers: {listed}"
        return None

    def refusal(self, actor: str, granted: Sequence[str]) -> str | None:
        """Why ``actor`` may not approve now, given who already did; None: they may."""
        reason = self.may_approve(actor)
        if reason:
            return reason
        if normalize(actor) in distinct(granted):
            return (
                f"{actor} already approved {self.step!r}; {self.approval.min} distinct "
                "approver(s) needed"
            )
        if self.satisfied(granted):
            return (
                f"{self.step!r} is already approved ({len(distinct(granted))} of "
                f"{self.approval.min}): approving past the quorum is refused"
            )
        uncovered = self.uncovered(granted)
        if len(distinct(granted)) >= self.approval.min and not any(
            member_of(actor, g, self.groups) for g in uncovered
        ):
            return f"the gate needs {self.missing(granted)}; {actor} is in none of those groups"
        return None

    def may_decide(self, actor: str) -> bool:
        """Strict envs: deny and cancel are for the run's approvers and its initiator only."""
        if same(actor, self.initiator):
            return True
        allowed = self.allowed()
        return allowed is not None and normalize(actor) in allowed


def undefined_group(approval: Any, env_approvers: Sequence[str], groups: Any, gate: str) -> str:
    """Why a gate's rules cannot be judged: a group they name (``Approval(groups=[...])``,
    ``group:NAME`` in its approvers or the env's) that ``[tool.runbook.groups]`` does not
    define; empty when every one is defined. Pure, checked before anything is counted or
    written (and before a run starts: ``gate_problems``): a typo must neither open nor close a
    gate."""
    named = [
        entry[len(GROUP_PREFIX) :]
        for entry in (approval.approvers or env_approvers)
        if entry.startswith(GROUP_PREFIX)
    ]
    missing = [g for g in dict.fromkeys([*named, *approval.groups]) if g not in groups]
    if not missing:
        return ""
    known = ", ".join(sorted(groups)) or "none configured"
    return (
        f"gate {gate!r} names group {missing[0]!r}, which the config does not define "
        f"([tool.runbook.groups]: {known})"
    )


def gate_problems(steps: Mapping[str, Any], env_approvers: Sequence[str], groups: Any) -> str:
    """The first gate of a runbook that names an undefined group, said as ``undefined_group``
    says it, or empty: a run is refused before any step rather than failing at the gate (a
    ``group:`` approver) or pausing at one nobody can approve (``groups=``)."""
    for name, step in steps.items():
        approval = step.options.approval
        if approval is not None:
            problem = undefined_group(approval, env_approvers, groups, name)
            if problem:
                return problem
    return ""


def counted(
    records: Sequence[ApprovalRecord],
    rules: Rules,
    plan_hash: str | None,
    signers: Path | None = None,
) -> list[str]:
    """Who granted this plan and still may, under the rules as they are now.

    ``signers``: the env's allowed_signers file; a row whose signature does not prove it
    for this plan is nobody (a name in the store is not a person in a ``signers`` env), so an
    unsigned row claiming ``bob`` neither fills the quorum nor makes bob's own approval a
    duplicate. The engine re-verifies before the step runs all the same (``valid_grants``).

    An automatic grant is nobody's approval: it is the engine's own where protection does
    not require one (``ApprovalPolicy.check``), so it counts toward no quorum.
    """
    from runbook.decisions import verify_record

    out = []
    for r in records:
        if r.decision != "granted" or r.auto:
            continue
        if (
            plan_hash is not None
            and r.data.get("plan_hash") == plan_hash
            and r.data.get("rules") in (None, rules.approval.rules())
            and rules.may_approve(r.actor) is None
            and (signers is None or verify_record(r, signers, plan_hash) is None)
        ):
            out.append(r.actor)
    return out


# -- the gate's plan in the store --------------------------------------------------------------


def waiting_gate(run_id: str, waiting: Sequence[str], step: str | None) -> str:
    """The gate an approval is for: ``step`` if it awaits approval, else the only waiting gate.

    One rule for ``runbook approve`` here and for a Temporal run's workflow (which knows its
    waiting gates without a store): an ``ApprovalError`` says why no gate is meant.
    """
    if step is not None:
        if step not in waiting:
            raise ApprovalError(
                f"step {step!r} of run {run_id} is not awaiting "
                f"approval (waiting: {', '.join(waiting) or 'none'})"
            )
        return step
    if not waiting:
        raise ApprovalError(f"run {run_id} has no step awaiting approval")
    if len(waiting) > 1:
        raise ApprovalError(
            f"several steps await approval ({', '.join(waiting)}): name one with --step"
        )
    return waiting[0]


def gate_state(options: Mapping[str, Any], step: str) -> dict[str, Any] | None:
    """The plan put up for approval at ``step`` (plan, plan_hash, requested_at, deadline)."""
    gates = options.get(GATES_KEY) or {}
    state = gates.get(step)
    return dict(state) if isinstance(state, dict) else None


def save_gate(store: RunStore, run_id: str, step: str, state: Mapping[str, Any]) -> None:
    record = store.get_run(run_id)
    options = dict(record.options)
    gates = dict(options.get(GATES_KEY) or {})
    gates[step] = dict(state)
    options[GATES_KEY] = gates
    store.update_run(run_id, options=options)


def new_state(
    plan: dict[str, Any], digest: str, approval: Approval, now: datetime
) -> dict[str, Any]:
    seconds = approval.timeout_seconds
    deadline = (now + timedelta(seconds=seconds)).isoformat() if seconds else None
    return {
        "plan": plan,
        "plan_hash": digest,
        "requested_at": now.isoformat(),
        "deadline": deadline,
        "on_timeout": approval.on_timeout if seconds else None,
    }


def stored_form(output: Any, mask: Any) -> Any:
    """An output as the run store keeps it (secrets masked), so plans built live and from the
    store agree."""
    from runbook.engine import REDACTED_KEY, is_redacted

    if output is None or is_redacted(output) or mask is None:
        return output
    masked = mask(output)
    return {REDACTED_KEY: True, "value": masked} if masked != output else output


# -- what the engine asks ------------------------------------------------------------------------


@dataclass
class ApprovalPolicy:
    run_id: str
    actor: str  # who started the run
    protection: Protection
    store: RunStore | None
    env_approvers: tuple[str, ...] = ()
    yes: bool = False  # --yes: approve as the running actor where the rules allow it
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)
    signers: Path | None = None
    # The live run, to build plans: runbook, env, params (a Params), mask (the redactor).
    runbook: Any = None
    env: str = ""
    params: Any = None
    mask: Any = None
    _pending: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def rules(self, approval: Approval, step: str = "") -> Rules:
        return Rules(approval, self.actor, self.env_approvers, self.groups, self.run_id, step)

    def allowed(self, approval: Approval) -> tuple[str, ...]:
        return self.rules(approval).named()

    def request_data(self, step: str, approval: Approval) -> dict[str, Any]:
        data: dict[str, Any] = {
            "min": approval.min,
            "allow_self": approval.allow_self,
            "approvers": list(self.allowed(approval)),
            "groups": list(approval.groups),
            "command": f"runbook approve {self.run_id} --step {step}",
            "signed": self.signers is not None,
        }
        state = self._pending.get(step)
        if state is not None:
            data.update(plan_hash=state["plan_hash"], plan=state["plan"])
            if state.get("deadline"):
                data.update(deadline=state["deadline"], on_timeout=state["on_timeout"])
        return data

    def _records(self, step: str) -> Sequence[ApprovalRecord]:
        return self.store.approvals(self.run_id, step) if self.store is not None else []

    def plan(self, step: str, outputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.runbook is None:  # a bare policy (unit tests): bind to the run and step only
            return {"run_id": self.run_id, "step": step}
        return P.for_gate(
            self.runbook,
            step,
            run_id=self.run_id,
            env=self.env,
            params=self.params,
            outputs=outputs,
            mask=lambda v: stored_form(v, self.mask),
        )

    def check(self, step: str, approval: Approval, execution: Any) -> str:
        """``granted``, ``denied`` or ``pending``; records auto-grants and re-requests."""
        records = self._records(step)
        if any(r.decision == "denied" for r in records):
            return "denied"
        plan = self.plan(step, execution.outputs)
        digest = P.plan_hash(plan)
        now = execution.clock.now()
        if not self.protection.require_approval and any(
            r.auto and r.data.get("plan_hash") == digest for r in records
        ):
            return "granted"  # the engine's own grant of this plan, recorded before
        rules = self.rules(approval, step)
        state = self._state(step)
        if state is not None and state.get("plan_hash") != digest:
            self._drifted(step, approval, execution, state, plan, digest, now)
            return "pending"
        valid = self.valid_grants(step, rules, records, digest, execution)
        if rules.satisfied(valid):
            return "granted"
        if not self.protection.require_approval:
            comment = f"auto-approved: env protection {self.protection.level}"
            self._grant(step, execution, digest, auto=True, comment=comment)
            return "granted"
        if (
            self.yes
            and self.protection.allow_yes
            and self.signers is None
            and rules.refusal(self.actor, valid) is None
            and rules.satisfied([*valid, self.actor])
        ):
            self._grant(step, execution, digest, auto=False, comment="approved with --yes")
            return "granted"
        if state is None:
            state = new_state(plan, digest, approval, now)
            self._remember(step, state)
        return "pending"

    def _state(self, step: str) -> dict[str, Any] | None:
        if self.store is None:
            return self._pending.get(step)
        return gate_state(self.store.get_run(self.run_id).options, step)

    def _remember(self, step: str, state: dict[str, Any]) -> None:
        self._pending[step] = state
        if self.store is not None:
            save_gate(self.store, self.run_id, step, state)

    def _drifted(
        self,
        step: str,
        approval: Approval,
        execution: Any,
        old: Mapping[str, Any],
        plan: dict[str, Any],
        digest: str,
        now: datetime,
    ) -> None:
        """The world moved since the plan was put up: ask again, naming what changed."""
        reasons = P.differences(old.get("plan") or {}, plan) or ["the plan changed"]
        state = new_state(plan, digest, approval, now)
        self._remember(step, state)
        data = self.request_data(step, approval)
        data.update(
            reason="plan changed since it was put up for approval: " + "; ".join(reasons),
            changes=reasons,
            previous_plan_hash=old.get("plan_hash"),
        )
        execution.emit("approval_requested", step, data)

    def valid_grants(
        self,
        step: str,
        rules: Rules,
        records: Sequence[ApprovalRecord],
        digest: str,
        execution: Any = None,
    ) -> list[str]:
        """Who granted *this* plan and still counts under the rules as they are now."""
        from runbook.decisions import verify_record

        out: list[str] = []
        for r in records:
            if r.decision != "granted":
                continue
            if r.auto and not self.protection.require_approval:
                continue  # the engine's own grant: check() decides those, not the quorum
            if r.data.get("plan_hash") != digest and not r.auto:
                continue  # an approval of another plan (before drift) does not count
            problem = None
            if r.auto:
                problem = (
                    "it is an automatic grant, and env protection "
                    f"{self.protection.level!r} requires approval"
                )
            elif r.data.get("rules") not in (None, rules.approval.rules()):
                problem = "the gate's rules changed since it was approved"
            else:
                problem = rules.may_approve(r.actor)
            if problem is None and self.signers is not None:
                problem = verify_record(r, self.signers, digest)
            if problem is not None:
                if execution is not None:
                    execution.emit(
                        "approval_refused",
                        step,
                        {
                            "decision": "use",
                            "claimed_actor": r.actor,
                            "reason": f"the approval by {r.actor} does not count: {problem}",
                        },
                        actor="runbook",
                    )
                continue
            if normalize(r.actor) not in distinct(out):
                out.append(r.actor)
        return out

    def _grant(self, step: str, execution: Any, digest: str, *, auto: bool, comment: str) -> None:
        now = execution.clock.now()
        data = {"plan_hash": digest, "signed_at": now.isoformat()}
        if self.store is not None:
            self.store.add_approval(
                ApprovalRecord(self.run_id, step, self.actor, "granted", comment, now, auto, data)
            )
        execution.emit(
            "approval_granted",
            step,
            {"comment": comment, "auto": auto, "approver": self.actor, "plan_hash": digest},
        )
