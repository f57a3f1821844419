"""``runbook show RUN --step S``: everything about one step, for the person who must fix it.

The step's row in the run store says where it stands (status, attempts, output); the audit trail
says what happened on each attempt: the whole traceback, the line in the runbook, a failed
command's stderr, what the step logged, every retry. Both are masked already.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from runbook.audit.events import AuditEvent
from runbook.audit.query import AuditQuery
from runbook.errors import RunbookError, UsageError
from runbook.redact import is_redacted


def shown_output(output: Any) -> tuple[Any, bool]:
    """A stored output as a person should see it, and whether a secret was masked in it.

    The store keeps an output that contained a secret as ``{"__runbook_redacted__": true,
    "value": <masked>}``: an internal wrapper, never to be printed as such.
    """
    if is_redacted(output):
        return output.get("value"), True
    return output, False


def step_events(sinks: Iterable[Any], run_id: str, step: str) -> list[AuditEvent]:
    """The step's events from the first audit sink that can be queried (none: an empty list)."""
    for sink in sinks:
        if not getattr(sink, "queryable", True):
            continue
        try:
            return list(sink.events(AuditQuery(run_id=run_id, step=step)))
        except RunbookError:
            continue
    return []


def _block(title: str, text: str, indent: str = "    ") -> Iterator[str]:
    yield f"  {title}:"
    for line in text.rstrip().splitlines() or [""]:
        yield f"{indent}{line}"


def render_step(record: Any, events: list[AuditEvent], when: Any) -> list[str]:
    """The text of ``show --step``: the stored state, then each attempt as the audit tells it."""
    lines = [f"step {record.name}: {record.status.replace('_', ' ')}"]
    lines.append(f"  attempts {record.attempts}")
    lines.append(f"  started  {when(record.started_at)}   finished {when(record.finished_at)}")
    if record.reason:
        lines.append(f"  reason   {record.reason}")
    if record.error:
        lines += _block("error", record.error)
    output, masked = shown_output(record.output)
    if output is not None:
        text = json.dumps(output, indent=2, default=str, ensure_ascii=False)
        lines += _block("output" + (" (a secret in it is masked)" if masked else ""), text)
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        attempt = data.get("attempt")
        head = f"{event.at}  {event.kind}" + (f" (attempt {attempt})" if attempt else "")
        if event.kind in ("step_started",) and not data.get("log"):
            continue
        lines.append("")
        lines.append(head)
        for entry in data.get("log") or ():
            lines.append(f"  │ {entry.get('level', 'INFO')} {entry.get('message', '')}")
        if event.kind == "step_retried" and data.get("error"):
            lines.append(f"  error: {data['error']}  (retried after {data.get('delay', 0)}s)")
        if data.get("where"):
            lines.append(f"  at {data['where']}")
        if data.get("stderr"):
            lines += _block("stderr (last lines)", str(data["stderr"]))
        if data.get("traceback"):
            lines += _block("traceback", str(data["traceback"]))
        elif event.kind in ("step_failed", "rollback_failed") and data.get("error"):
            lines.append(f"  error: {data['error']}")
    if not events:
        lines.append("")
        lines.append("(no audit events for this step in a queryable sink)")
    return lines


def step_document(record: Any, events: list[AuditEvent]) -> dict[str, Any]:
    """The ``--json`` form of ``show --step``."""
    output, masked = shown_output(record.output)
    return {
        "step": record.name,
        "status": record.status,
        "attempts": record.attempts,
        "error": record.error,
        "reason": record.reason,
        "output": output,
        "output_masked": masked,
        "events": [e.to_dict() for e in events],
    }


def require_step(steps: dict[str, Any], run_id: str, name: str) -> Any:
    if name not in steps:
        known = ", ".join(steps) or "none started"
        raise UsageError(f"run {run_id} has no step {name!r} (steps: {known})")
    return steps[name]
