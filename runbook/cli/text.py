"""How a run's facts read in a terminal: symbols, labels, durations, summaries.

Shared by the live reporter (``runbook exec``), ``runbook runs``/``show`` and the dry-run plan, so
a status looks the same wherever an operator sees it. Pure functions: nothing here writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# Status of a step -> (symbol, colour) for its line.
SYMBOLS: Mapping[str, tuple[str, str | None]] = {
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "skipped": ("↷", "yellow"),
    "awaiting_approval": ("⏸", "cyan"),
    "rolled_back": ("↺", "magenta"),
    "rollback_failed": ("✗", "red"),
    "cancelled": ("⊘", "yellow"),
    "denied": ("✗", "red"),
    "planned": ("·", "blue"),
    "pending": ("·", None),
    "running": ("…", None),
}

# The order of the summary line; anything else follows in the order seen.
SUMMARY_ORDER = (
    "succeeded",
    "planned",
    "failed",
    "skipped",
    "awaiting_approval",
    "denied",
    "cancelled",
    "rolled_back",
    "rollback_failed",
    "pending",
    "running",
    "interrupted",
)

# The same symbols for a terminal that cannot show Unicode (PYTHONIOENCODING=ascii, LANG=C).
ASCII_SYMBOLS: Mapping[str, str] = {
    "✓": "ok",
    "✗": "x",
    "↷": "-",
    "⏸": "||",
    "↺": "<-",
    "⊘": "/",
    "·": ".",
    "…": "..",
}

# Step statuses --quiet still shows: what went wrong.
LOUD = frozenset({"failed", "rollback_failed", "denied"})

RUN_COLOURS = {
    "succeeded": "green",
    "paused": "cyan",
    "failed": "red",
    "rolled_back": "red",
    "rollback_failed": "red",
    "cancelled": "yellow",
}


def can_encode(out: Any, text: str = "✓✗↷⏸↺⊘·…│▼") -> bool:
    """Whether ``out`` can write ``text`` (its encoding may be ASCII in a CI container)."""
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def color_wanted(
    out: Any, no_color: bool = False, environ: Mapping[str, str] | None = None
) -> bool:
    """Colour only on a terminal, and never with ``--no-color`` or ``NO_COLOR`` (no-color.org)."""
    environ = os.environ if environ is None else environ
    if no_color or environ.get("NO_COLOR"):
        return False
    return bool(getattr(out, "isatty", lambda: False)())


def rollback_outcome(step: Any) -> str:
    """How a step's undo went: its ``rollback`` field (a failed step that was undone keeps
    ``failed``), else its status (a succeeded step that was undone is ``rolled_back``)."""
    return getattr(step, "rollback", None) or step.status


def label(status: str) -> str:
    """``rolled_back`` -> ``rolled back``: statuses read as words in human output."""
    return "not run" if status == "pending" else status.replace("_", " ")


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def summarize(counts: Mapping[str, int]) -> str:
    """``{"succeeded": 4, "skipped": 1}`` -> ``4 succeeded, 1 skipped`` in a stable order."""
    order = [s for s in SUMMARY_ORDER if counts.get(s)] + [
        s for s in counts if s not in SUMMARY_ORDER and counts[s]
    ]
    return ", ".join(f"{counts[s]} {label(s)}" for s in order) or "no steps"


# A run stopped by its own machinery, not by a step: what the operator must know next.
_STOPS = {
    "AuditError": (
        "the run stopped: a required audit sink refused an event, and runbook never goes on "
        "unrecorded. Nothing ran after it; a step shown as interrupted may have half-happened. "
        "Fix the sink (or mark it best_effort), check that step, then start a new run"
    ),
    "StoreError": (
        "the run stopped: the run store refused a write, so this run could not be resumed from "
        "here. Nothing ran after it; check the store and the step shown as interrupted"
    ),
}


def stopped_because(error: str | None) -> str | None:
    """For a run ended by an audit or store failure, one line saying what it means."""
    kind = (error or "").split(":", 1)[0].strip()
    return _STOPS.get(kind)


def short_where(where: str) -> str:
    """``/work/runbooks/deploy.py:42`` -> ``deploy.py:42``: the name the operator knows."""
    file, _, line = where.rpartition(":")
    return f"{os.path.basename(file)}:{line}" if file else where
