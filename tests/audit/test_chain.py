"""Tampering with a stored trail is caught, and the report names the event where it happened."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from runbook.audit.events import GENESIS, AuditEvent
from runbook.audit.query import normalize_at

from .conftest import JsonlStored, SqliteStored, Stored, forge, make_event

N = 8


def test_intact_chain_verifies(stored: Stored) -> None:
    events = stored.fill(N)
    assert [e.seq for e in events] == list(range(1, N + 1))
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in pairwise(events))
    report = stored.sink.verify()
    assert report.ok and report.checked == N
    assert str(report) == f"ok: {N} events, chain intact"


def test_a_missing_or_empty_sink_verifies_as_empty_without_creating_it(stored: Stored) -> None:
    report = stored.sink.verify()
    assert report.ok and report.checked == 0
    assert list(stored.sink.events()) == []
    assert not stored.path.exists()


def test_reopened_sink_continues_the_chain(stored: Stored) -> None:
    first = stored.fill(3)
    stored.sink.close()
    again = type(stored.sink).open(stored.url)
    fourth = again.append(make_event(3))
    again.close()
    assert fourth.seq == 4 and fourth.prev_hash == first[-1].hash
    assert stored.sink.verify().ok


# -- jsonl ----------------------------------------------------------------------------------------


def test_jsonl_edited_field_is_named(jsonl: JsonlStored) -> None:
    jsonl.fill(N)
    docs = jsonl.docs()
    docs[2]["actor"] = "mallory"
    jsonl.write_docs(docs)
    report = jsonl.sink.verify()
    assert not report.ok and report.seq == 3
    assert "event 3 (step_started) was edited" in report.problem
    assert "[line 3]" in report.problem
    assert str(report).startswith("TAMPERED at seq 3")


def test_jsonl_edit_with_recomputed_hash_breaks_the_next_link(jsonl: JsonlStored) -> None:
    jsonl.fill(N)
    docs = jsonl.docs()
    docs[2] = forge(docs[2], actor="mallory")
    jsonl.write_docs(docs)
    report = jsonl.sink.verify()
    assert not report.ok and report.seq == 4
    assert "does not link to the event before it" in report.problem


def test_jsonl_deleted_line_is_named(jsonl: JsonlStored) -> None:
    jsonl.fill(N)
    lines = jsonl.lines()
    del lines[2]
    jsonl.write_lines(lines)
    report = jsonl.sink.verify()
    assert not report.ok and report.seq == 4
    assert "event 3 removed" in report.problem


def test_jsonl_inserted_forged_event_is_named(jsonl: JsonlStored) -> None:
    jsonl.fill(N)
    docs = jsonl.docs()
    # A forged event that links correctly to event 2 and carries a valid hash of its own.
    fake = forge(docs[2], kind="approval_granted", actor="mallory", step="switch")
    docs.insert(2, fake)
    jsonl.write_docs(docs)
    report = jsonl.sink.verify()
    assert not report.ok and report.seq == 3
    assert "inserted" in report.problem and "[line 4]" in report.problem


def test_jsonl_swapped_lines_are_reported_as_reordered(jsonl: JsonlStored) -> None:
    jsonl.fill(N)
    lines = jsonl.lines()
    lines[2], lines[3] = lines[3], lines[2]
    jsonl.write_lines(lines)
    report = jsonl.sink.verify()
    assert not report.ok and report.seq == 4
    assert "reordered" in report.problem
    assert "event 4 (step_succeeded) is stored before event 3" in report.problem


def test_jsonl_truncated_last_line_is_reported(jsonl: JsonlStored) -> None:
    jsonl.fill(N)
    raw = jsonl.path.read_bytes()
    jsonl.path.write_bytes(raw[:-40])
    report = jsonl.sink.verify()
    assert not report.ok and report.seq == N
    assert f"line {N} (after event {N - 1}) is not an audit event" in report.problem
    assert "incomplete" in report.problem


def test_jsonl_garbage_line_in_the_middle_is_reported_with_its_line_number(
    jsonl: JsonlStored,
) -> None:
    jsonl.fill(N)
    lines = jsonl.lines()
    lines[4] = "this is not json\n"
    jsonl.write_lines(lines)
    report = jsonl.sink.verify()
    assert not report.ok and report.seq == 5
    assert "line 5 (after event 4) is not an audit event" in report.problem


def test_jsonl_cutting_whole_events_off_the_end_needs_an_anchor(jsonl: JsonlStored) -> None:
    """The documented limit: removing the newest events leaves a valid, shorter chain. The head
    (seq, hash) kept elsewhere is what shows it; see docs/audit.md."""
    events = jsonl.fill(N)
    jsonl.write_lines(jsonl.lines()[:-2])
    report = jsonl.sink.verify()
    assert report.ok and report.checked == N - 2
    assert list(jsonl.sink.events())[-1].hash != events[-1].hash


# -- sqlite ---------------------------------------------------------------------------------------


def test_sqlite_edit_of_the_stored_json_is_named(sqlite_db: SqliteStored) -> None:
    sqlite_db.fill(N)
    sqlite_db.sql(
        "UPDATE audit_events SET event = json_set(event, '$.data.attempt', 9) WHERE seq = 3"
    )
    report = sqlite_db.sink.verify()
    assert not report.ok and report.seq == 3
    assert "event 3 (step_started) was edited" in report.problem


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("kind", "step_skipped"),
        ("actor", "mallory"),
        ("run_id", "run-2"),
        ("step", "other"),
        ("at", "2020-01-01T00:00:00.000000+00:00"),
        ("hash", "f" * 64),
        ("prev_hash", "e" * 64),
    ],
)
def test_sqlite_update_of_any_column_is_named(
    sqlite_db: SqliteStored, column: str, value: str
) -> None:
    sqlite_db.fill(N)
    sqlite_db.sql(f"UPDATE audit_events SET {column} = ? WHERE seq = 5", value)
    report = sqlite_db.sink.verify()
    assert not report.ok and report.seq == 5
    assert f"event 5 (approval_requested) was edited: column {column}" in report.problem


def test_sqlite_deleted_row_is_named(sqlite_db: SqliteStored) -> None:
    sqlite_db.fill(N)
    sqlite_db.sql("DELETE FROM audit_events WHERE seq = 3")
    report = sqlite_db.sink.verify()
    assert not report.ok and report.seq == 4
    assert "event 3 removed" in report.problem


def test_sqlite_inserted_forged_row_is_named(sqlite_db: SqliteStored) -> None:
    sqlite_db.fill(N)
    (text,) = sqlite_db.sql("SELECT event FROM audit_events WHERE seq = 3")[0]
    fake = AuditEvent.from_dict(forge(json.loads(text), actor="mallory"))
    # Make room at seq 3, as an attacker must, then insert the forged event there.
    sqlite_db.sql("UPDATE audit_events SET seq = -seq - 1 WHERE seq >= 3")
    sqlite_db.sql("UPDATE audit_events SET seq = -seq WHERE seq < 0")
    sqlite_db.sql(
        "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        3,
        fake.run_id,
        fake.step,
        fake.kind,
        fake.actor,
        normalize_at(fake.at),
        fake.prev_hash,
        fake.hash,
        json.dumps(fake.to_dict()),
    )
    report = sqlite_db.sink.verify()
    assert not report.ok and report.seq == 4
    assert "row 4 holds the event hashed as seq 3" in report.problem


def test_sqlite_swapped_rows_are_named(sqlite_db: SqliteStored) -> None:
    sqlite_db.fill(N)
    sqlite_db.sql("UPDATE audit_events SET seq = -3 WHERE seq = 3")
    sqlite_db.sql("UPDATE audit_events SET seq = 3 WHERE seq = 4")
    sqlite_db.sql("UPDATE audit_events SET seq = 4 WHERE seq = -3")
    report = sqlite_db.sink.verify()
    assert not report.ok and report.seq == 3
    assert "row 3 holds the event hashed as seq 4" in report.problem


def test_sqlite_truncated_last_row_is_named(sqlite_db: SqliteStored) -> None:
    sqlite_db.fill(N)
    sqlite_db.sql(f"UPDATE audit_events SET event = substr(event, 1, 60) WHERE seq = {N}")
    report = sqlite_db.sink.verify()
    assert not report.ok and report.seq == N
    assert f"row {N} is not an audit event" in report.problem
