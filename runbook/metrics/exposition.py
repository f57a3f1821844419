"""The Prometheus text exposition format, and which samples one run contributes.

Pure functions over data, so what a run reports is testable without any server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runbook.audit.events import AuditEvent
from runbook.context import RunInfo
from runbook.result import RunResult

# name -> (type, help). Counters accumulate across pushes; gauges describe the latest run.
METRICS: dict[str, tuple[str, str]] = {
    "runbook_runs_total": ("counter", "Runs that ended or paused, by runbook, env and status."),
    "runbook_rollbacks_total": ("counter", "Rollbacks run, by runbook, env and outcome."),
    "runbook_step_duration_seconds": ("gauge", "Duration of each step in the latest run."),
    "runbook_approval_wait_seconds": (
        "gauge",
        "Time from an approval request to its decision, latest run.",
    ),
    "runbook_last_run_timestamp_seconds": ("gauge", "When the latest run ended or paused."),
}
COUNTERS = frozenset(name for name, (kind, _) in METRICS.items() if kind == "counter")

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...] = field(default=())
    value: float = 0.0

    @classmethod
    def of(cls, name: str, value: float, **labels: str) -> Sample:
        return cls(name, tuple(sorted(labels.items())), float(value))

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """Name and labels: what identifies a series when samples of two runs are merged."""
        return (self.name, self.labels)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


def render(samples: Iterable[Sample]) -> str:
    """Samples as exposition text: HELP and TYPE once per metric, metrics in a stable order."""
    by_name: dict[str, list[Sample]] = {}
    for sample in samples:
        by_name.setdefault(sample.name, []).append(sample)
    lines = []
    for name in sorted(by_name):
        kind, text = METRICS.get(name, ("untyped", ""))
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for sample in sorted(by_name[name], key=lambda s: s.labels):
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
            lines.append(
                f"{name}{{{labels}}} {_number(sample.value)}"
                if labels
                else f"{name} {_number(sample.value)}"
            )
    return "\n".join(lines) + "\n" if lines else ""


def parse(text: str) -> list[Sample]:
    """Exposition text back into samples (what a previous push or textfile held)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        pairs = tuple(sorted((k, _unescape(v)) for k, v in _LABEL.findall(labels or "")))
        try:
            out.append(Sample(name, pairs, float(value)))
        except ValueError:
            continue
    return out


def _seconds(start: str | datetime | None, end: str | datetime | None) -> float | None:
    if start is None or end is None:
        return None
    a = datetime.fromisoformat(start) if isinstance(start, str) else start
    b = datetime.fromisoformat(end) if isinstance(end, str) else end
    return max(0.0, (b - a).total_seconds())


def _approval_waits(events: Iterable[AuditEvent]) -> dict[str, float]:
    asked: dict[str, str] = {}
    waits: dict[str, float] = {}
    for event in events:
        if event.kind == "approval_requested" and event.step:
            asked.setdefault(event.step, event.at)
        elif event.kind in ("approval_granted", "approval_denied") and event.step in asked:
            wait = _seconds(asked[event.step], event.at)
            if wait is not None:
                waits[event.step] = wait
    return waits


def run_samples(
    run: RunInfo, result: RunResult, previous: Iterable[Sample] = (), *, now: datetime
) -> list[Sample]:
    """What this run reports, with counters continued from ``previous`` (the target's last
    state). Gauges describe this run only; counters of other label sets are carried over."""
    base: dict[str, str] = {"runbook": run.name, "env": run.env}
    fresh: list[Sample] = [
        Sample.of("runbook_runs_total", 1, **base, status=result.status),
        Sample.of("runbook_last_run_timestamp_seconds", now.timestamp(), **base),
    ]
    for name, step in result.steps.items():
        if step.duration is not None:
            fresh.append(
                Sample.of(
                    "runbook_step_duration_seconds",
                    step.duration,
                    **base,
                    step=name,
                    status=step.status,
                )
            )
        outcome = getattr(step, "rollback", None) or (
            step.status if step.status in ("rolled_back", "rollback_failed") else None
        )
        if outcome:
            fresh.append(Sample.of("runbook_rollbacks_total", 1, **base, outcome=outcome))
    for gate, wait in _approval_waits(result.audit or ()).items():
        fresh.append(Sample.of("runbook_approval_wait_seconds", wait, **base, step=gate))
    return merge(previous, fresh)


def merge(previous: Iterable[Sample], fresh: Iterable[Sample]) -> list[Sample]:
    totals: dict[Any, Sample] = {}
    for sample in previous:
        if sample.name in COUNTERS:
            totals[sample.key] = sample
    for sample in fresh:
        if sample.name in COUNTERS:
            old = totals.get(sample.key)
            totals[sample.key] = Sample(
                sample.name, sample.labels, sample.value + (old.value if old else 0.0)
            )
        else:
            totals[sample.key] = sample
    return list(totals.values())


def labels_of(samples: Iterable[Sample]) -> Mapping[str, set[str]]:
    out: dict[str, set[str]] = {}
    for sample in samples:
        for key, value in sample.labels:
            out.setdefault(key, set()).add(value)
    return out
