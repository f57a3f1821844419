"""What a stored run's steps become when it is continued: pure decisions, no I/O of their own.

Before a stored run is resumed, denied or cancelled, its rows are checked (:func:`stored_steps`:
a status runbook never writes is a corrupt store, refused whole), every interrupted step or
rollback is decided (:func:`plan`: automatically where the step allows it, by the operator's
``--retry/--skip-interrupted`` otherwise, or refused), and finished steps whose secret output a
pending step needs are named to run again (:func:`secret_outputs_to_redo`). ``DurableRuns``
(runbook/durable.py) acts on the answers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runbook import interruptions as C
from runbook import result as R
from runbook.audit.pipeline import HOST
from runbook.collect import Runbook
from runbook.errors import StoreCorrupt, UsageError
from runbook.redact import is_redacted
from runbook.store.base import RunRecord, RunStore, StepRecord


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_resumable(record: RunRecord, action: str = "resume") -> RunRecord:
    """``record`` if it may be continued (paused, or running with its process gone), else a
    usage error: a run still running on this host, or one that has ended."""
    run_id = record.run_id
    if record.status == R.RUNNING:
        if (
            record.host == HOST
            and record.pid
            and record.pid != os.getpid()
            and _pid_alive(record.pid)
        ):
            raise UsageError(f"run {run_id} is still running (pid {record.pid} on {HOST})")
    elif record.status != R.PAUSED:
        raise UsageError(
            f"run {run_id} has ended ({record.status.replace('_', ' ')}); nothing to {action}"
        )
    return record


def stored_steps(store: RunStore, run_id: str) -> dict[str, StepRecord]:
    """The stored steps of a run, refused whole (exit 2, nothing changed) if one is not
    something runbook writes: deciding from a garbled status could re-run a finished step."""
    steps = store.get_steps(run_id)
    for name, rec in steps.items():
        if rec.status not in R.STEP_STATUSES:
            raise StoreCorrupt(
                f"run {run_id}: step {name!r} has status {rec.status!r}, which runbook never "
                f"writes (known: {', '.join(R.STEP_STATUSES)}); the run store is corrupt, "
                "nothing was changed"
            )
        if rec.rollback not in R.ROLLBACK_STATES:
            raise StoreCorrupt(
                f"run {run_id}: step {name!r} has rollback state {rec.rollback!r}, which "
                "runbook never writes; the run store is corrupt, nothing was changed"
            )
    return steps


@dataclass(frozen=True)
class Plan:
    """What continuing a stored run does with the steps its dead process left unfinished."""

    decisions: dict[str, str]  # interrupted step -> what resume does with it
    rollbacks: frozenset[str]  # those whose rollback (not the step) was interrupted
    human: tuple[str, ...]  # decided by the operator's flag (recorded as such)
    rolling: bool  # the run had begun to roll back: it goes on doing so


def plan(
    rb: Runbook,
    record: RunRecord,
    prior: Mapping[str, StepRecord],
    *,
    choice: str | None,
    settling: bool,
) -> Plan:
    """Decide each interrupted step or rollback, or refuse (exit 2) when a human must."""
    rolling = (
        settling or record.options.get("rollback") is not None or C.rolling_back(rb.steps, prior)
    )
    decisions: dict[str, str] = {}
    rollbacks, human, undecided = set(), [], []
    for name, rollback in C.interrupted(rb.steps, prior):
        if rollback:
            rollbacks.add(name)
        auto = C.automatic_decision(rb.steps[name], rollback=rollback, rolling=rolling)
        if auto is not None:
            decisions[name] = auto
        elif choice is not None:
            decisions[name] = choice
            human.append(name)
        else:
            undecided.append(f"the rollback of {name}" if rollback else name)
    if undecided:
        raise UsageError(undecided_message(record.run_id, undecided, settling=settling))
    return Plan(decisions, frozenset(rollbacks), tuple(human), rolling)


def undecided_message(
    run_id: str, undecided: Sequence[str], *, settling: bool, died: str = "the process died"
) -> str:
    """The refusal that names what a human must decide, and the exact commands to do it."""
    one = len(undecided) == 1
    what = ", ".join(undecided)
    was, it = ("was", "it") if one else ("were", "them")
    state = f"{what} {was} running when {died} and {'is' if one else 'are'} not idempotent"
    retry = f"runbook resume {run_id} --retry-interrupted"
    skip = f"runbook resume {run_id} --skip-interrupted"
    if settling:
        return (
            f"run {run_id}: {state}; decide first: {retry} (run {it} again) or {skip} "
            f"(leave {it} undone)"
        )
    return (
        f"run {run_id}: {state}; {'it' if one else 'they'} may have half-happened. Check, then "
        f"{retry} (run {it} again) or {skip} (treat {it} as not run)"
    )


def secret_outputs_to_redo(rb: Runbook, prior: Mapping[str, Any]) -> set[str]:
    """Finished steps whose output held a secret (stored masked) that a pending step needs.

    The secret itself was never stored, so the output must be produced again: allowed for an
    idempotent step, refused (exit 2, nothing run) for any other.
    """
    done = {n for n, rec in prior.items() if rec.status in R.DONE_STATUSES}
    redo, refused = set(), []
    for name, rec in prior.items():
        if rec.status != R.STEP_SUCCEEDED or not is_redacted(rec.output) or name not in rb.steps:
            continue
        needed_by = [n for n, s in rb.steps.items() if name in s.deps and n not in done]
        if not needed_by:
            continue
        if rb.steps[name].options.idempotent:
            redo.add(name)
        else:
            refused.append(f"{name} (needed by {', '.join(needed_by)})")
    if refused:
        raise UsageError(
            f"cannot resume: the output of {'; '.join(refused)} contained a secret, which is "
            "never stored; declare the step idempotent=True so resume can produce it again"
        )
    return redo
