"""What the driver does at an approval gate: ask the policy, then go on, pause or stop.

``ApprovalPolicy`` (``runbook.approval_policy``) decides (``granted``, ``denied`` or
``pending``) and records its grants and re-requests; this module turns its verdict into the
step's transition.
A denied gate fails the run (its steps are rolled back); a pending one leaves the step
``awaiting_approval`` with one ``approval_requested`` event, carrying the question the gate asks
(``Approval(reason=...)``), and the run pauses once nothing else can run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.errors import RunbookError
from runbook.recorder import error_text

if TYPE_CHECKING:
    from runbook.engine import Execution
    from runbook.markers import Approval


def gate_reason(approval: Any, kwargs: dict[str, Any]) -> str | None:
    """The question an approval gate asks (``Approval(reason=...)``), from the step's inputs."""
    if approval.reason is None:
        return None
    try:
        return str(approval.reason(**kwargs))
    except Exception as exc:  # a broken reason must not hide the gate itself
        return f"(reason unavailable: {error_text(exc)})"


def through_gate(x: Execution, name: str, approval: Approval, kwargs: dict[str, Any]) -> bool:
    """True when the gate of step ``name`` is granted; else the step is recorded as denied
    (and the run fails) or as awaiting approval, and must not run."""
    verdict = x.s.approvals.check(name, approval, x)
    if verdict == "denied":
        x.coord.on_denied(name)
        x.finish(name)
        x.fail_run(RunbookError(f"approval for {name!r} was denied"))
        return False
    if verdict == "pending":
        why = gate_reason(approval, kwargs)
        if x.coord.on_awaiting(name, why):
            data = x.s.approvals.request_data(name, approval)
            x.finish(
                name,
                event="approval_requested",
                data={**data, "reason": why} if why else data,
            )
        return False
    return True
