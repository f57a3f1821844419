"""``sqlite://``: a table in the run store's file, chained across processes, queried with SQL."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runbook.audit import sqlite as sqlite_sink
from runbook.audit.query import AuditQuery, open_sink
from runbook.audit.sqlite import DEFAULT_DB, SqliteSink, select_sql, sqlite_path
from runbook.errors import AuditError

from .conftest import SqliteStored, make_event
from .test_jsonl import run_children


@pytest.mark.slow
def test_four_processes_appending_form_one_intact_chain(sqlite_db: SqliteStored) -> None:
    run_children(sqlite_db.url, processes=4, each=100)
    events = list(sqlite_db.sink.events())
    assert [e.seq for e in events] == list(range(1, 401))
    for who in ("p0", "p1", "p2", "p3"):
        assert [e.data["i"] for e in events if e.run_id == who] == list(range(100))
    report = sqlite_db.sink.verify()
    assert report.ok and report.checked == 400


def test_lives_beside_the_run_store_tables(sqlite_db: SqliteStored) -> None:
    with sqlite3.connect(sqlite_db.path) as conn:  # the run store got there first
        conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO runs VALUES ('run-1')")
    sqlite_db.fill(3)
    assert sqlite_db.sql("SELECT id FROM runs") == [("run-1",)]
    assert sqlite_db.sql("SELECT seq, kind FROM audit_events ORDER BY seq") == [
        (1, "run_started"),
        (2, "lock_acquired"),
        (3, "step_started"),
    ]


def test_columns_hold_the_queryable_fields_and_the_canonical_json(
    sqlite_db: SqliteStored,
) -> None:
    (event,) = sqlite_db.fill(1)
    ((run_id, step, kind, actor, at, prev_hash, hash_, text),) = sqlite_db.sql(
        "SELECT run_id, step, kind, actor, at, prev_hash, hash, event FROM audit_events"
    )
    assert (run_id, step, kind, actor) == ("run-1", None, "run_started", "alice")
    assert at == "2026-11-23T18:00:00.000000+00:00"
    assert (prev_hash, hash_) == (event.prev_hash, event.hash)
    assert '"seq":1' in text and text.startswith('{"actor":"alice"')


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (AuditQuery(run_id="r"), "audit_events_run_id"),
        (AuditQuery(run_id="r", kind="step_failed"), "audit_events_run_id"),
        (AuditQuery(run_id="r", actor="bob"), "audit_events_run_id"),
        (AuditQuery(since=datetime(2026, 1, 1, tzinfo=UTC)), "audit_events_at"),
        (AuditQuery(kind="step_failed", since=datetime(2026, 1, 1, tzinfo=UTC)), "audit_events_at"),
    ],
)
def test_queries_are_served_by_indexes(
    sqlite_db: SqliteStored, query: AuditQuery, index: str
) -> None:
    sqlite_db.fill(1)
    sql, args = select_sql(query)
    plan = " ".join(str(row) for row in sqlite_db.sql(f"EXPLAIN QUERY PLAN {sql}", *args))
    assert index in plan


def test_a_transition_touches_no_kind_or_actor_index(sqlite_db: SqliteStored) -> None:
    """Every index is written by every append, in the commit a transition waits for: the trail
    keeps only the two its queries need most (a run's events, a time range)."""
    sqlite_db.fill(1)
    indexes = {
        row[0]
        for row in sqlite_db.sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_events'"
        )
    }
    assert indexes == {"audit_events_run_id", "audit_events_at"}


def test_a_file_made_with_the_kind_and_actor_indexes_keeps_and_uses_them(tmp_path: Path) -> None:
    """Files written before those indexes were dropped from the schema open unchanged."""
    db = tmp_path / "runbook.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.executescript(
            sqlite_sink._SCHEMA
            + "CREATE INDEX audit_events_kind ON audit_events (kind);"
            + "CREATE INDEX audit_events_actor ON audit_events (actor);"
        )
    sink = open_sink(f"sqlite:///{db}")
    try:
        sink.append_many([make_event(0), make_event(1)])
        assert [e.seq for e in sink.events(AuditQuery(kind="run_started"))] == [1]
        assert sink.verify().ok
    finally:
        sink.close()
    with closing(sqlite3.connect(db)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        sql, args = select_sql(AuditQuery(kind="run_started"))
        plan = " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
    assert {"audit_events_kind", "audit_events_actor"} <= names
    assert "audit_events_kind" in plan


def test_append_failure_raises_audit_error_naming_the_sink(tmp_path: Path) -> None:
    db = tmp_path / "rb.db"
    with sqlite3.connect(db) as conn:  # a table of that name that is not ours
        conn.execute("CREATE TABLE audit_events (x TEXT)")
    sink = open_sink(f"sqlite:///{db}")
    with pytest.raises(AuditError) as info:
        sink.append(make_event(0))
    assert f"audit sink sqlite:///{db} failed: OperationalError" in str(info.value)
    sink.close()


def test_waits_for_another_writer_instead_of_failing(sqlite_db: SqliteStored) -> None:
    sqlite_db.fill(1)
    other = sqlite3.connect(sqlite_db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    done: list[int] = []
    writer = threading.Thread(target=lambda: done.append(sqlite_db.sink.append(make_event(1)).seq))
    writer.start()
    writer.join(timeout=0.2)
    assert done == []  # blocked on the other transaction, not failed
    other.execute("COMMIT")
    writer.join(timeout=10)
    assert done == [2]
    other.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite://", DEFAULT_DB),
        ("sqlite:///.runbook/runbook.db", ".runbook/runbook.db"),
        ("sqlite:////var/lib/runbook.db", "/var/lib/runbook.db"),
        ("sqlite:///rb.db?mode=x", "rb.db"),
    ],
)
def test_url_to_path(url: str, path: str) -> None:
    assert sqlite_path(url) == path


def test_in_memory_database_is_refused_with_a_pointer_to_memory_sink() -> None:
    with pytest.raises(AuditError, match="use memory://"):
        SqliteSink.open("sqlite:///:memory:")
