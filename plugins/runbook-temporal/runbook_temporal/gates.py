"""Approval gates inside the workflow, judged by runbook's own ``ApprovalPolicy``.

The policy reads approvals from a run store; here the store is the workflow's own memory of the
decisions it received (each also written to the real store by an activity), so a gate is decided
by exactly the code that decides it for a local run, deterministically, on replay too. What the
policy records (an auto-grant under ``protection = "none"``, a ``--yes``) is collected and written
by the workflow through the ``decide`` activity.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from runbook.approvals import ApprovalPolicy, granted_by
    from runbook.markers import Approval
    from runbook.protection import Protection
    from runbook.store.base import ApprovalRecord
    from runbook_temporal import messages as M


class _Decisions:
    """The slice of ``RunStore`` that ``ApprovalPolicy`` uses, over the workflow's state."""

    def __init__(self) -> None:
        self.records: list[ApprovalRecord] = []

    def approvals(self, run_id: str, step: str | None = None) -> list[ApprovalRecord]:
        return [r for r in self.records if step is None or r.step == step]

    def add_approval(self, record: ApprovalRecord) -> None:
        self.records.append(record)


class _Clock:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now


class Gates:
    """Every gate of one run: what the policy says, and the events it wants written."""

    def __init__(
        self, run: M.RunRef, policy: M.Policy, now: Callable[[], datetime] = workflow.now
    ) -> None:
        self.run = run
        self.decisions = _Decisions()
        protection = Protection(
            level=policy.level,
            require_approval=policy.require_approval,
            allow_yes=policy.allow_yes,
        )
        self.policy = ApprovalPolicy(
            run.run_id,
            run.actor,
            protection,
            self.decisions,  # type: ignore[arg-type]
            tuple(policy.approvers),
            policy.yes,
        )
        self.pending: list[M.Event] = []  # approval_granted events the policy emitted
        self.clock = _Clock(now)

    @staticmethod
    def approval(spec: M.ApprovalSpec) -> Approval:
        return Approval(min=spec.min, allow_self=spec.allow_self, approvers=tuple(spec.approvers))

    # ``ApprovalPolicy`` hands itself an execution to emit through: this object.
    def emit(self, kind: str, step: str | None = None, data: dict[str, Any] | None = None) -> None:
        self.pending.append(M.Event(kind, step, dict(data or {}), self.run.actor))

    def check(self, step: str, spec: M.ApprovalSpec) -> str:
        """``granted``, ``denied`` or ``pending``."""
        return self.policy.check(step, self.approval(spec), self)

    def take_pending(self) -> list[M.Event]:
        out, self.pending = self.pending, []
        return out

    def request_data(self, step: str, spec: M.ApprovalSpec) -> dict[str, Any]:
        return self.policy.request_data(step, self.approval(spec))

    def validate(self, step: str, spec: M.ApprovalSpec, actor: str) -> None:
        """Raise ``ApprovalError`` if ``actor`` may not approve ``step`` now (four eyes)."""
        self.policy.validate(step, self.approval(spec), actor)

    def add(self, step: str, actor: str, decision: str, comment: str) -> ApprovalRecord:
        record = ApprovalRecord(self.run.run_id, step, actor, decision, comment, self.clock.now())
        self.decisions.add_approval(record)
        return record

    def granted(self, step: str) -> set[str]:
        return granted_by(self.decisions.approvals(self.run.run_id, step))
