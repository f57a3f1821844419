"""Approval gates: who may decide, when a gate is satisfied, and what an approval is bound to.

:class:`Rules` is the pure decision for one gate in one env (four eyes, approver lists and
groups, the quorum), with identities compared after :func:`runbook.identity.normalize`; the
functions around it check a runbook's gates before it runs and count decisions. What the engine
asks at a gate, and the gate's state kept in the run, is runbook/approval_policy.py
(``ApprovalPolicy``); the ``approve``/``deny``/``cancel`` side (refusals, signatures) is
runbook/decisions.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.errors import ApprovalError
from runbook.identity import GROUP_PREFIX, distinct, expand, member_of, members, normalize, same
from runbook.markers import Approval
from runbook.store.base import ApprovalRecord


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
