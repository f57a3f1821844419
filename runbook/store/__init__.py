"""Run stores: the protocol, and the built-in ``memory://`` and ``sqlite://`` implementations."""

from runbook.store.base import ApprovalRecord, InterruptDecision, RunRecord, RunStore, StepRecord

__all__ = ["ApprovalRecord", "InterruptDecision", "RunRecord", "RunStore", "StepRecord"]
