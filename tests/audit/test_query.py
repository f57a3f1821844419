"""Filters served identically by every queryable sink; time expressions; the CLI's formatting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from runbook.audit.events import AuditEvent
from runbook.audit.memory import MemorySink
from runbook.audit.query import (
    AuditQuery,
    events_json,
    format_table,
    parse_time,
)

from .conftest import T0, Stored, make_event

NOW = datetime(2026, 11, 23, 18, 30, tzinfo=UTC)


@pytest.fixture(params=["memory", "jsonl", "sqlite"])
def filled(request: pytest.FixtureRequest) -> MemorySink | object:
    """Two runs of ten events each, second run by bob, one minute apart from T0."""
    if request.param == "memory":
        sink = MemorySink()
    else:
        stored: Stored = request.getfixturevalue(
            "sqlite_db" if request.param == "sqlite" else "jsonl"
        )
        sink = stored.sink
    for i in range(10):
        sink.append(make_event(i, run_id="run-a"))
    for i in range(10):
        sink.append(make_event(10 + i, run_id="run-b", actor="bob"))
    return sink


@pytest.mark.parametrize(
    ("query", "seqs"),
    [
        (AuditQuery(), list(range(1, 21))),
        (AuditQuery(run_id="run-b"), list(range(11, 21))),
        (AuditQuery(step="switch"), [2, 5, 6, 7, 12, 15, 16, 17]),
        (AuditQuery(kind="step_failed"), [7, 17]),
        (AuditQuery(actor="bob"), [6, *range(11, 21)]),
        (AuditQuery(since=T0 + timedelta(minutes=15)), [16, 17, 18, 19, 20]),
        (AuditQuery(until=T0 + timedelta(minutes=2)), [1, 2, 3]),
        # Other offsets are converted.
        (
            AuditQuery(since=datetime(2026, 11, 23, 19, 18, tzinfo=timezone(timedelta(hours=1)))),
            [19, 20],
        ),
        (AuditQuery(run_id="run-a", step="switch", kind="approval_granted", actor="bob"), [6]),
        (AuditQuery(run_id="run-a", limit=3), [1, 2, 3]),
        (AuditQuery(run_id="nope"), []),
    ],
)
def test_filters(filled: MemorySink, query: AuditQuery, seqs: list[int]) -> None:
    assert [e.seq for e in filled.events(query)] == seqs


def test_naive_bounds_are_utc(stored: Stored) -> None:
    for i in range(5):
        stored.sink.append(make_event(i))
    query = AuditQuery(since=datetime(2026, 11, 23, 18, 1), until=datetime(2026, 11, 23, 18, 2))
    assert [e.seq for e in stored.sink.events(query)] == [2, 3]


def test_event_with_other_offset_is_compared_in_utc(stored: Stored) -> None:
    event = make_event(0)
    stored.sink.append(AuditEvent(**{**event.to_dict(), "at": "2026-11-23T20:00:00+02:00"}))
    assert len(list(stored.sink.events(AuditQuery(since=T0)))) == 1
    assert list(stored.sink.events(AuditQuery(since=T0 + timedelta(seconds=1)))) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2h ago", NOW - timedelta(hours=2)),
        (" 15M ", NOW - timedelta(minutes=15)),
        ("now", NOW),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T14:05:00", datetime(2026, 11, 20, 14, 5, tzinfo=UTC)),
        ("2026-11-20T14:05:00Z", datetime(2026, 11, 20, 14, 5, tzinfo=UTC)),
        ("2026-11-20T15:05:00+01:00", datetime(2026, 11, 20, 14, 5, tzinfo=UTC)),
        ("2026-11-20 14:05", datetime(2026, 11, 20, 14, 5, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = parse_time(text, NOW)
    assert parsed == expected and parsed.tzinfo is not None


def test_parse_time_with_a_naive_now_reads_it_as_utc() -> None:
    assert parse_time("1h", datetime(2026, 11, 23, 18, 30)) == NOW - timedelta(hours=1)


@pytest.mark.parametrize("text", ["", "yesterday", "5y", "-2h", "2026-13-01", "h2", "1.5h"])
def test_parse_time_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid time .*ISO-8601 .* 30m, 2h, 7d, 1w"):
        parse_time(text, NOW)


@pytest.mark.parametrize(
    "text",
    ["3000000d", "99999999999999999999s", "0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00"],
)
def test_parse_time_refuses_a_time_outside_the_calendar(text: str) -> None:
    with pytest.raises(ValueError, match=r"outside the years 1 to 9999"):
        parse_time(text, NOW)


def test_table_is_one_aligned_line_per_event_with_the_telling_details() -> None:
    sink = MemorySink()
    sink.append(make_event(3, duration_ms=1234, attempt=2))
    sink.append(make_event(6, error="AssertionError: health\n  check failed", duration_ms=80))
    sink.append(make_event(5, comment="LGTM"))
    lines = list(format_table(sink.events()))
    assert lines[0].split() == ["SEQ", "AT", "(UTC)", "RUN", "KIND", "STEP", "ACTOR"]
    assert lines[1].split() == [
        "1",
        "2026-11-23",
        "18:03:00",
        "run-1",
        "step_succeeded",
        "stage",
        "alice",
        "1.2s",
        "attempt=2",
    ]
    assert lines[2].endswith("AssertionError: health check failed  80ms")
    assert lines[3].endswith("bob    comment=LGTM")
    assert len({line.index("run-1") for line in lines[1:]}) == 1  # columns aligned


def test_table_shows_a_change_as_before_and_after() -> None:
    sink = MemorySink()
    sink.append(
        make_event(
            0, kind="change_recorded", target="dns web", before="blue", after={"color": "green"}
        )
    )
    (_, line) = format_table(sink.events())
    assert line.endswith('dns web: blue → {"color": "green"}')


def test_table_truncates_long_details_and_is_empty_without_events() -> None:
    sink = MemorySink()
    sink.append(make_event(6, error="x" * 500))
    (_, line) = format_table(sink.events())
    assert line.endswith("…") and len(line) < 200
    assert list(format_table([])) == []


def test_events_json_is_an_array_of_full_events() -> None:
    sink = MemorySink()
    stored = sink.append(make_event(0))
    assert json.loads(events_json(sink.events())) == [stored.to_dict()]
    assert json.loads(events_json([])) == []
