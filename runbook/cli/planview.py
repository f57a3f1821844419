"""The dry-run plan (``runbook exec --dry-run``): each level of the DAG with what it would do."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from runbook.cli.text import SYMBOLS, first_line, label
from runbook.errors import UsageError
from runbook.locks.base import expand_name


def expand(template: str, run: Any) -> str:
    """A lock name template as the engine will expand it, or unchanged when it cannot be yet."""
    if run is None:
        return template
    try:
        return expand_name(template, env=run.env, params=SimpleNamespace(**run.params))
    except UsageError:
        return template


def _short(value: Any, width: int = 70) -> str:
    try:
        text = json.dumps(value, default=str, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_plan(
    rb: Any, result: Any, run: Any, style: Callable[..., str] = lambda t, *a, **k: t
) -> list[str]:
    """The dry-run plan: each parallel level in order, each step with what it would do."""
    lines = ["plan (probes ran for real; no step that changes anything ran):"]
    if rb.lock:
        lines.append(f"  run lock: {expand(rb.lock, run)}")
    width = max((len(n) for n in rb.steps), default=0)
    for number, level in enumerate(rb.levels(), 1):
        lines.append(f"  level {number}" + ("  (parallel)" if len(level) > 1 else ""))
        for name in level:
            step = rb.steps[name]
            res = result.steps.get(name)
            status = res.status if res is not None else "pending"
            symbol, fg = SYMBOLS.get(status, ("·", None))
            facts: list[str] = []
            if res is None:
                facts.append(label(status))
            elif status == "succeeded":
                mask = getattr(result, "redactor", None) or (lambda value: value)
                facts.append(f"→ {_short(mask(res.output))}")  # probes read real secrets
            elif status == "skipped":
                facts.append(f"skipped ({res.reason})" if res.reason else "skipped")
            elif status == "planned":
                facts.append("would run")
                if res.reason and res.reason.startswith("when"):
                    facts.append(res.reason)
            elif status == "failed":
                facts.append(f"failed: {first_line(res.error)}")
            else:
                facts.append(label(status))
            if status != "skipped":
                if step.options.approval is not None:
                    facts.append("approval gate")
                if step.options.lock:
                    facts.append(f"lock {expand(step.options.lock, run)}")
                if step.rollback is not None:
                    facts.append(f"rollback {step.rollback.func.__name__}")
            lines.append(
                f"    {style(symbol, fg, bold=True)} {name.ljust(width)}  {step.kind:<5}  "
                + " · ".join(facts)
            )
    return lines
