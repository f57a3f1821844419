"""The trail is strict JSON both ways: written without NaN, read without duplicate keys."""

from __future__ import annotations

import json
import math

import pytest

from runbook.audit.events import AuditEvent, canonical_json, loads_strict, parse_event
from runbook.audit.memory import MemorySink

from .conftest import JsonlStored, Stored, make_event


def test_canonical_json_refuses_nan_and_infinity() -> None:
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            canonical_json({"x": value})


def test_a_non_finite_output_is_stored_by_name_and_the_line_is_valid_json(
    stored: Stored,
) -> None:
    event = make_event(3, output={"ratio": math.nan, "max": math.inf, "list": [-math.inf, 1.5]})
    written = stored.sink.append(event)
    assert written.data["output"] == {
        "ratio": "NaN",
        "max": "Infinity",
        "list": ["-Infinity", 1.5],
    }
    (back,) = stored.sink.events()
    assert back == written
    assert stored.sink.verify().ok


def test_the_nan_free_path_keeps_the_event_object() -> None:
    event = make_event(1)
    assert MemorySink().append(event).data is event.data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"actor":"mallory","actor":"alice"}', "duplicate key 'actor'"),
        ('{"data":{"a":1,"a":2}}', "duplicate key 'a'"),
        ('{"x":NaN}', "NaN is not JSON"),
        ('{"x":-Infinity}', "-Infinity is not JSON"),
    ],
)
def test_loads_strict_refuses(text: str, message: str) -> None:
    json.loads(text)  # the lenient reader takes all of these
    with pytest.raises(ValueError, match=message):
        loads_strict(text)


def test_parse_event_refuses_non_objects_and_unknown_fields() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_event("[1]")
    with pytest.raises(ValueError, match="unknown audit field"):
        parse_event('{"kind":"run_started","run_id":"r","forged":1}')
    assert parse_event('{"kind":"run_started","run_id":"r"}') == AuditEvent("run_started", "r")


def test_a_duplicate_key_line_is_skipped_when_listing_and_named_by_verify(
    jsonl: JsonlStored,
) -> None:
    jsonl.fill(4)
    lines = jsonl.lines()
    lines[1] = lines[1].replace('{"actor":', '{"actor":"mallory","actor":', 1)
    jsonl.write_lines(lines)
    assert [e.seq for e in jsonl.sink.events()] == [1, 3, 4]
    report = jsonl.sink.verify()
    assert not report.ok and report.seq == 2
    assert "line 2 (after event 1) is not an audit event: duplicate key 'actor'" in report.problem
