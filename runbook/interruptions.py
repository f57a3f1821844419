"""What a resume decides for the steps a dead process left running: pure rules on stored rows.

A process killed mid-run leaves steps (or their rollbacks) ``running`` in the store. Whether the
run had begun to fail (so it only goes on rolling back), which steps were interrupted, and which
of them a resume may decide by itself are read here from the stored records alone, no I/O: the
coordinator (``Coordinator.restore``) applies the decisions, ``runbook.recovery`` plans them
before anything is written, and the Temporal executor replays the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook import result as R

# Decisions for an interrupted step (or rollback) on resume.
RERUN = "rerun"  # idempotent: run again without asking
RETRY = "retry"  # --retry-interrupted
SKIP = "skip"  # --skip-interrupted
CUT_OFF = "cut off"  # the run was rolling back: the step ends cancelled, its rollback runs
# Why a rollback began (stored in the run's options, so a resume goes on rolling back).
FAILED = "failed"
CANCELLED = "cancelled"


def rolling_back(steps: Mapping[str, Any], records: Mapping[str, Any]) -> bool:
    """Do these stored steps show a run that had begun to fail (and so to roll back)?"""
    for name, rec in records.items():
        step = steps.get(name)
        if step is None:
            continue
        if rec.rollback is not None or rec.status == R.DENIED:
            return True
        if rec.status == R.STEP_FAILED and step.options.required:
            return True
    return False


def interrupted(steps: Mapping[str, Any], records: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """``(step, rollback)`` for each step (or step's rollback) that was running when its
    process died, in store order."""
    out = []
    for name, rec in records.items():
        if name not in steps:
            continue
        if rec.rollback == R.ROLLBACK_RUNNING:
            out.append((name, True))
        elif rec.status == R.STEP_RUNNING:
            out.append((name, False))
    return out


def automatic_decision(step: Any, *, rollback: bool, rolling: bool) -> str | None:
    """What resume does with an interrupted step by itself, or None: a human must decide.

    A run that was rolling back never goes forward: its interrupted steps are cut off (their own
    rollbacks run). Re-running without asking is only for ``idempotent=True`` steps (and their
    rollbacks); anything else may have half-happened.
    """
    if rolling and not rollback:
        return CUT_OFF
    return RERUN if step.options.idempotent else None
