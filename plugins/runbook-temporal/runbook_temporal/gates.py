"""A decision refused before it enters the run's history: runbook's four-eyes rules, in the
workflow's update validator.

The validator may not do I/O, so it judges with ``runbook.approvals.ApprovalPolicy.validate`` over
what the workflow knows (who approved so far, from the store, as the last gate check and decision
reported). Whether a gate then opens is decided in a worker by the run's full ``ApprovalPolicy``
against the store (the ``runbook.gate`` activity), exactly as for a local run.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from runbook.approvals import ApprovalPolicy
    from runbook.markers import Approval
    from runbook.protection import Protection
    from runbook.store.base import ApprovalRecord
    from runbook_temporal import messages as M


class _Granted:
    """The slice of ``RunStore`` that ``ApprovalPolicy.validate`` reads: who granted."""

    def __init__(self, run_id: str, step: str, granted: list[str]) -> None:
        self.records = [ApprovalRecord(run_id, step, who, "granted") for who in granted]

    def approvals(self, run_id: str, step: str | None = None) -> list[ApprovalRecord]:
        return self.records


def approval_of(spec: M.ApprovalSpec) -> Approval:
    return Approval(min=spec.min, allow_self=spec.allow_self, approvers=tuple(spec.approvers))


def refuse_approval(
    run: M.RunRef, policy: M.Policy, step: str, spec: M.ApprovalSpec, actor: str, granted: list[str]
) -> None:
    """Raise ``ApprovalError`` if ``actor`` may not approve ``step`` now."""
    protection = Protection(
        level=policy.level, require_approval=policy.require_approval, allow_yes=policy.allow_yes
    )
    store = _Granted(run.run_id, step, granted)
    checker = ApprovalPolicy(run.run_id, run.actor, protection, store, tuple(policy.approvers))  # type: ignore[arg-type]
    checker.validate(step, approval_of(spec), actor)
