"""Approval gates: who may approve, when a gate is satisfied, and auto-grants by protection level.

The engine asks ``check`` each time a gated step is reached (on the first run and on every resume);
the ``approve``/``deny`` commands call ``validate`` before recording a decision, so four-eyes rules
are enforced when the decision is made, and re-checked when it is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runbook.errors import ApprovalError
from runbook.markers import Approval
from runbook.protection import Protection
from runbook.store.base import ApprovalRecord, RunStore


def granted_by(records: Sequence[ApprovalRecord]) -> set[str]:
    """The distinct actors who granted: what ``Approval(min=...)`` counts."""
    return {r.actor for r in records if r.decision == "granted"}


@dataclass
class ApprovalPolicy:
    run_id: str
    actor: str  # who started the run
    protection: Protection
    store: RunStore | None
    env_approvers: tuple[str, ...] = ()
    yes: bool = False  # --yes: approve as the running actor where the rules allow it

    def allowed(self, approval: Approval) -> tuple[str, ...]:
        return approval.approvers or self.env_approvers

    def request_data(self, step: str, approval: Approval) -> dict[str, Any]:
        return {
            "min": approval.min,
            "allow_self": approval.allow_self,
            "approvers": list(self.allowed(approval)),
            "command": f"runbook approve {self.run_id} --step {step}",
        }

    def _records(self, step: str) -> Sequence[ApprovalRecord]:
        return self.store.approvals(self.run_id, step) if self.store is not None else []

    def validate(self, step: str, approval: Approval, actor: str) -> None:
        """Refuse an approval that the gate's rules do not allow, with the reason."""
        if not approval.allow_self and actor == self.actor:
            raise ApprovalError(
                f"{actor} started run {self.run_id} and cannot approve {step!r} "
                "(four eyes: allow_self=False)"
            )
        allowed = self.allowed(approval)
        if allowed and actor not in allowed:
            raise ApprovalError(
                f"{actor} may not approve {step!r}; approvers: {', '.join(allowed)}"
            )
        if actor in granted_by(self._records(step)):
            raise ApprovalError(
                f"{actor} already approved {step!r}; {approval.min} distinct approvers needed"
            )

    def check(self, step: str, approval: Approval, execution: Any) -> str:
        """``granted``, ``denied`` or ``pending``; records auto-grants as such."""
        records = self._records(step)
        if any(r.decision == "denied" for r in records):
            return "denied"
        if any(r.auto for r in records):
            return "granted"
        if len(granted_by(records)) >= approval.min:
            return "granted"
        if not self.protection.require_approval:
            self._grant(
                step,
                execution,
                auto=True,
                comment=f"auto-approved: env protection {self.protection.level}",
            )
            return "granted"
        if (
            self.yes
            and self.protection.allow_yes
            and approval.min == 1
            and approval.allow_self
            and (not self.allowed(approval) or self.actor in self.allowed(approval))
        ):
            self._grant(step, execution, auto=False, comment="approved with --yes")
            return "granted"
        return "pending"

    def _grant(self, step: str, execution: Any, *, auto: bool, comment: str) -> None:
        now = execution.clock.now()
        if self.store is not None:
            self.store.add_approval(
                ApprovalRecord(self.run_id, step, self.actor, "granted", comment, now, auto)
            )
        execution.emit(
            "approval_granted", step, {"comment": comment, "auto": auto, "approver": self.actor}
        )
