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
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook import result as R
from runbook.approval_policy import gate_state, save_gate
from runbook.errors import RunbookError
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


def expiry_of(name: str, state: dict[str, Any]) -> tuple[str, str]:
    """What an expired gate's ``on_timeout`` does (``deny``/``fail``), and the reason in words."""
    action = state.get("on_timeout") or "deny"
    return action, f"approval of {name!r} expired at {state['deadline']} ({action})"


def recorded(state: dict[str, Any]) -> tuple[str, str] | None:
    """The action and reason of an expiry already recorded for this gate's plan (the mark
    ``{"expired": {"action", "reason"}}`` in its state), else None. A gate put up for approval
    again has a new state, without the mark."""
    mark = state.get("expired")
    if isinstance(mark, dict) and isinstance(mark.get("action"), str):
        return mark["action"], str(mark.get("reason", ""))
    return None


def record_expiry(
    store: Any, recorder: Any, run_id: str, name: str, state: dict[str, Any], now: datetime
) -> tuple[str, str]:
    """Record that gate ``name`` expired: ``approval_expired`` by ``runbook`` and, for ``deny``,
    a denial in the store (after the event: an audit refusal leaves no denial). Return the
    action (``deny``/``fail``) and the reason in words. Shared by the commands here and by an
    executor that keeps the deadline as a timer."""
    action, reason = expiry_of(name, state)
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


def _expired_now(
    durable: DurableRuns, record: RunRecord
) -> tuple[datetime, list[tuple[str, dict[str, Any]]]]:
    """The time now and the gates of ``record`` expired by then (none for a run an executor
    drives elsewhere): what every command settling expiries starts from."""
    now = durable.providers.clock.now()
    return now, [] if driven_elsewhere(record) else due(durable, record, now)


def record_due(
    durable: DurableRuns,
    record: RunRecord,
    expired: list[tuple[str, dict[str, Any]]],
    now: datetime,
) -> tuple[RunRecord, list[str], dict[str, str]]:
    """Record each expired gate once: a gate whose expiry is recorded already (its run could
    not be settled then: its runbook is gone) is not recorded again. Returns the run as stored
    now (with the marks), one message per gate, and the reasons of the gates that fail."""
    store = durable.providers.require_store()
    recorder = durable.recorder_for(record)
    messages, failed = [], {}
    for name, state in expired:
        done = recorded(state)
        if done is None:  # the event first, then the store's denial, then the mark
            done = record_expiry(store, recorder, record.run_id, name, state, now)
            mark = {"action": done[0], "reason": done[1]}
            save_gate(store, record.run_id, name, {**state, "expired": mark})
        action, reason = done
        if action == "fail":
            failed[name] = reason
        messages.append(f"run {record.run_id}: {reason}")
    return store.get_run(record.run_id), messages, failed


async def asettle_expired(
    durable: DurableRuns, record: RunRecord, failed: dict[str, str], *, guarded: bool = True
) -> None:
    """Settle a run whose expired gates are recorded (``record_due``): denied or failed."""
    rb = durable.load_run(record)

    async def settle() -> Any:
        return await durable.settle(record, rb, deny=True, actor=ACTOR, failed_gates=failed)

    if guarded:
        await durable.guarded(record.run_id, ACTOR, settle)
    else:
        await settle()


async def aapply_expired(
    durable: DurableRuns, record: RunRecord, *, guarded: bool = True
) -> list[str]:
    """Decide every expired gate of ``record``; one message per gate (empty: none expired).

    ``guarded=False``: the caller already holds the run's ``run:<id>`` guard (resume, deny).
    """
    now, expired = _expired_now(durable, record)
    if not expired:
        return []
    record, messages, failed = record_due(durable, record, expired, now)
    await asettle_expired(durable, record, failed, guarded=guarded)
    return messages


def apply_expired(durable: DurableRuns, record: RunRecord) -> list[str]:
    """:func:`aapply_expired` from synchronous code (``approve``, ``show``, ``runs``)."""
    if not _expired_now(durable, record)[1]:
        return []
    return asyncio.run(aapply_expired(durable, record))


@dataclass
class Swept:
    """What ``runbook sweep`` did: a message per gate decided, and per run it could not settle
    one problem (its expiry stays recorded, once) with the error, whose exit code the command
    ends with."""

    expired: list[str] = field(default_factory=list)
    problems: list[tuple[str, str, RunbookError]] = field(default_factory=list)  # id, line, error


def sweep(durable: DurableRuns, *, limit: int = 10_000) -> Swept:
    """Apply every expired timeout of every paused run (``runbook sweep``). A run that cannot be
    settled (its runbook is gone, another process holds it) is one problem; the others are
    still swept."""
    out = Swept()
    for record in durable.providers.require_store().list_runs(status=R.PAUSED, limit=limit):
        messages, problem = settle_due(durable, record)
        out.expired.extend(messages)
        if problem is not None:
            out.problems.append((record.run_id, *problem))
    return out


def settle_due(
    durable: DurableRuns, record: RunRecord
) -> tuple[list[str], tuple[str, RunbookError] | None]:
    """Decide the expired gates of one run: a message per gate settled, or, when the run cannot
    be settled (its runbook is gone, another process holds it), no message and the one line
    saying what expired and why it stays, with the error. Its expiry is recorded either way,
    once: a command that only reads the run (``runs``, ``show``) says so and goes on."""
    now, expired = _expired_now(durable, record)
    if not expired:
        return [], None
    messages: list[str] = []
    try:
        record, messages, failed = record_due(durable, record, expired, now)
        asyncio.run(asettle_expired(durable, record, failed))
    except RunbookError as exc:
        said = "; ".join(m.removeprefix(f"run {record.run_id}: ") for m in messages)
        return [], (f"run {record.run_id}: {said + '; not settled: ' if said else ''}{exc}", exc)
    return messages, None
