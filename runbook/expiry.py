"""Gates nobody decided in time: ``Approval(timeout="4h", on_timeout="deny"|"fail")``.

There is no daemon. The deadline (``requested_at + timeout``, kept with the gate's plan) is
applied by the first command that touches the run (``resume``, ``approve``, ``deny``, ``runs``,
``show``) and by ``runbook sweep`` (for cron): the gate is recorded as ``approval_expired`` by
the actor ``runbook`` and the run is settled without running anything new, rolling back what
completed. ``deny`` denies the gate (step ``denied``); ``fail`` fails the step (``failed``,
"approval expired"). Either way the run ends, so a forgotten prod change cannot be approved a
week later by someone who no longer knows what it was.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook import result as R
from runbook.approvals import gate_state
from runbook.store.base import ApprovalRecord, RunRecord

if TYPE_CHECKING:
    from runbook.durable import DurableRuns

ACTOR = "runbook"


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def due(durable: DurableRuns, record: RunRecord, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """The waiting gates of a paused run whose deadline has passed."""
    if record.status != R.PAUSED:
        return []
    steps = durable.providers.require_store().get_steps(record.run_id)
    out = []
    for name, step in steps.items():
        if step.status != R.AWAITING_APPROVAL:
            continue
        state = gate_state(record.options, name)
        if state and state.get("deadline") and _when(state["deadline"]) <= now:
            out.append((name, state))
    return out


def record_expiry(
    store: Any, recorder: Any, run_id: str, name: str, state: dict[str, Any], now: datetime
) -> tuple[str, str]:
    """Record that gate ``name`` expired: ``approval_expired`` by ``runbook`` and, for ``deny``,
    a denial in the store. Return the action (``deny``/``fail``) and the reason in words.
    Shared by the commands here and by an executor that keeps the deadline as a timer."""
    action = state.get("on_timeout") or "deny"
    recorder.emit(
        "approval_expired",
        name,
        {
            "requested_at": state.get("requested_at"),
            "deadline": state["deadline"],
            "on_timeout": action,
            "plan_hash": state.get("plan_hash"),
        },
        actor=ACTOR,
    )
    reason = f"approval of {name!r} expired at {state['deadline']} ({action})"
    if action != "fail":
        store.add_approval(
            ApprovalRecord(
                run_id,
                name,
                ACTOR,
                "denied",
                reason,
                now,
                False,
                {"plan_hash": state.get("plan_hash"), "expired": True},
            )
        )
    return action, reason


def driven_elsewhere(record: RunRecord) -> bool:
    """A run whose executor drives it elsewhere (``temporal://``) keeps its deadlines itself
    (a durable timer in its workflow): a command here never settles it."""
    url = record.options.get("executor")
    return isinstance(url, str) and url.partition(":")[0] not in ("", "local")


async def aapply_expired(
    durable: DurableRuns, record: RunRecord, *, guarded: bool = True
) -> list[str]:
    """Decide every expired gate of ``record``; one message per gate (empty: none expired).

    ``guarded=False``: the caller already holds the run's ``run:<id>`` guard (resume, deny).
    """
    now = durable.providers.clock.now()
    expired = [] if driven_elsewhere(record) else due(durable, record, now)
    if not expired:
        return []
    store = durable.providers.require_store()
    recorder = durable.recorder_for(record)
    messages, failed = [], {}
    for name, state in expired:
        action, reason = record_expiry(store, recorder, record.run_id, name, state, now)
        if action == "fail":
            failed[name] = reason
        messages.append(f"run {record.run_id}: {reason}")
    rb = durable.load_run(record)

    async def settle() -> Any:
        return await durable.settle(record, rb, deny=True, actor=ACTOR, failed_gates=failed)

    if guarded:
        await durable.guarded(record.run_id, ACTOR, settle)
    else:
        await settle()
    return messages


def apply_expired(durable: DurableRuns, record: RunRecord) -> list[str]:
    """:func:`aapply_expired` from synchronous code (``approve``, ``show``, ``runs``)."""
    if driven_elsewhere(record) or not due(durable, record, durable.providers.clock.now()):
        return []
    return asyncio.run(aapply_expired(durable, record))


def sweep(durable: DurableRuns, *, limit: int = 10_000) -> list[str]:
    """Apply every expired timeout of every paused run (``runbook sweep``)."""
    messages = []
    for record in durable.providers.require_store().list_runs(status=R.PAUSED, limit=limit):
        messages.extend(apply_expired(durable, record))
    return messages
