"""Reading the trail: the query a sink answers (``AuditQuery``), time expressions, opening a sink
by URL, and the CLI's compact formatting.

Everything here is shared by the sinks (time normalisation, URL display) and by ``runbook audit``;
none of it writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from runbook.audit.events import AuditEvent
from runbook.audit.verify import VerifyReport

if TYPE_CHECKING:
    from runbook.audit.events import AuditSink
    from runbook.plugins import Plugins

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*(?:ago)?\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# -- the query ---------------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AuditQuery:
    """What ``sink.events(query)`` returns, the same for every sink: each field given must match;
    ``since``/``until`` compare in UTC (a naive time is read as UTC, as the trail is written),
    and an event whose ``at`` cannot be read matches no time bound rather than every one."""

    run_id: str | None = None
    step: str | None = None
    kind: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None

    def matches(self, event: AuditEvent) -> bool:
        if self.run_id and event.run_id != self.run_id:
            return False
        if self.step and event.step != self.step:
            return False
        if self.kind and event.kind != self.kind:
            return False
        if self.actor and event.actor != self.actor:
            return False
        if self.since or self.until:
            try:
                at = _aware(event.at_datetime)
            except ValueError:
                return False
            if self.since and at < _aware(self.since):
                return False
            if self.until and at > _aware(self.until):
                return False
        return True


# -- time ---------------------------------------------------------------------------------------


def to_utc(value: datetime) -> datetime:
    """Aware UTC; a naive datetime is read as UTC (the trail is written in UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_time(text: str, now: datetime) -> datetime:
    """``--since``/``--until`` values: ISO-8601 or an age (``30m``, ``2h``, ``7d``, ``1w`` ago).

    A date alone means its midnight UTC; a date-time without an offset is UTC. ``now`` is injected
    so relative forms are testable and consistent within one command.
    """
    raw = text.strip()
    if raw.lower() == "now":
        return to_utc(now)
    match = _RELATIVE.match(raw)
    try:
        if match:
            amount, unit = int(match.group(1)), match.group(2).lower()
            return to_utc(now) - timedelta(**{_UNITS[unit]: amount})
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            day = date.fromisoformat(raw)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        return to_utc(datetime.fromisoformat(raw))
    except OverflowError:  # an age before year 1, or a time whose UTC is outside years 1-9999
        raise ValueError(
            f"invalid time {text!r}: it is outside the years 1 to 9999 (in UTC)"
        ) from None
    except ValueError:
        pass
    raise ValueError(
        f"invalid time {text!r}: use ISO-8601 (2026-11-23, 2026-11-23T14:05:00Z, "
        "2026-11-23T15:05:00+01:00) or an age such as 90s, 30m, 2h, 7d, 1w"
    )


def normalize_at(at: str) -> str | None:
    """An event's ``at`` as fixed-width UTC text, so string order is time order (SQL indexes)."""
    try:
        return format_utc(datetime.fromisoformat(at))
    except (TypeError, ValueError):
        return None


def format_utc(value: datetime) -> str:
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def matches(query: AuditQuery, event: AuditEvent) -> bool:
    """``AuditQuery.matches`` with time zones normalised: naive bounds and ``Z`` suffixes are UTC,
    and an event whose ``at`` cannot be read never matches a time bound (instead of raising)."""
    if query.since is None and query.until is None:
        return query.matches(event)
    if not AuditQuery(query.run_id, query.step, query.kind, query.actor).matches(event):
        return False
    try:
        at = to_utc(datetime.fromisoformat(event.at))
    except (TypeError, ValueError):
        return False
    if query.since is not None and at < to_utc(query.since):
        return False
    return not (query.until is not None and at > to_utc(query.until))


def explain_gap(
    report: VerifyReport,
    failing: AuditEvent | None,
    previous_seq: int,
    remaining: Iterable[AuditEvent],
) -> VerifyReport:
    """Tell a reordering from a removal: ``verify_chain`` sees a gap at the first event out of
    place; if the missing event turns up later in the sink, it was moved, not removed. Only runs on
    a broken chain, so an intact one is still read once."""
    if report.ok or failing is None or failing.seq is None or failing.seq <= previous_seq + 1:
        return report
    missing = previous_seq + 1
    for later in remaining:
        if later.seq == missing:
            return VerifyReport(
                False,
                report.checked,
                failing.seq,
                f"events were reordered: event {failing.seq} ({failing.kind}) is stored before "
                f"event {missing}, right after event {previous_seq}",
            )
    return report


# -- sinks --------------------------------------------------------------------------------------


def open_sink(url: str, plugins: Plugins | None = None, **options: Any) -> AuditSink:
    """The sink serving ``url``'s scheme, from the built-ins or any installed plugin."""
    if plugins is None:
        from runbook.plugins import Plugins

        plugins = Plugins()
    return plugins.open("audit", url, **options)


def last_event(sink: AuditSink, query: AuditQuery | None = None) -> AuditEvent | None:
    """The sink's last event (matching ``query``): its ``head()`` when it has a fast one (read
    from the end of a file, one indexed row), else the last of ``events``."""
    fast = getattr(sink, "head", None)
    if query is None and fast is not None:
        return fast()
    last = None
    for last in sink.events(query):  # noqa: B007 - only the last one is wanted
        pass
    return last


# -- formatting ---------------------------------------------------------------------------------

# The data keys worth a glance in a one-line listing, in the order an operator reads them.
_DETAIL_KEYS = (
    "error",
    "duration_ms",
    "attempt",
    "lock",
    "fencing_token",
    "approver",
    "comment",
    "reason",
    "target",
    "status",
)
_DETAIL_WIDTH = 70


def _detail(event: AuditEvent) -> str:
    parts: list[str] = []
    data = event.data or {}
    for key in _DETAIL_KEYS:
        if key not in data or data[key] in (None, ""):
            continue
        value = data[key]
        if key == "duration_ms" and isinstance(value, int | float):
            parts.append(f"{value / 1000:.1f}s" if value >= 1000 else f"{value:.0f}ms")
        elif key == "error":
            parts.append(" ".join(str(value).split()))
        elif key == "target" and ("before" in data or "after" in data):
            before, after = _compact(data.get("before")), _compact(data.get("after"))
            parts.append(f"{value}: {before} → {after}")
        else:
            parts.append(f"{key}={value}")
    text = "  ".join(parts)
    return text if len(text) <= _DETAIL_WIDTH else text[: _DETAIL_WIDTH - 1] + "…"


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _short_at(at: str) -> str:
    try:
        return to_utc(datetime.fromisoformat(at)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return at or "?"


def format_table(events: Iterable[AuditEvent]) -> Iterator[str]:
    """One line per event: seq, time (UTC), run, kind, step, actor, the most telling data.

    Columns are sized to the events shown, so the listing is read like ``git log --oneline``.
    """
    rows = [
        (
            str(e.seq if e.seq is not None else "?"),
            _short_at(e.at),
            e.run_id,
            e.kind,
            e.step or "-",
            e.actor or "-",
            _detail(e),
        )
        for e in events
    ]
    if not rows:
        return
    from runbook.cli.table import table  # the CLI's layout; sinks import this module without it

    header = ("SEQ", "AT (UTC)", "RUN", "KIND", "STEP", "ACTOR", "")
    yield from table([header, *rows], right={0})


def events_json(events: Iterable[AuditEvent]) -> str:
    """A JSON array of events, every field included, for ``--json`` and for piping to ``jq``."""
    return json.dumps([e.to_dict() for e in events], indent=2, ensure_ascii=False, default=str)
