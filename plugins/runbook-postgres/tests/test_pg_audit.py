"""The PostgreSQL audit sink: one chain across processes, SQL queries, tampering named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from runbook_postgres.audit import PostgresSink

from runbook.audit.events import GENESIS, AuditEvent
from runbook.audit.query import AuditQuery
from runbook.errors import AuditError
from runbook.plugins import Plugins

pytestmark = pytest.mark.service

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _events(schema: str) -> sql.Identifier:
    """The sink's table in this test's schema, for statements run behind runbook's back."""
    return sql.Identifier(schema, "audit_events")


def event(
    i: int,
    *,
    run_id: str = "r1",
    kind: str = "step_started",
    step: str | None = "plan",
    actor: str = "alice",
) -> AuditEvent:
    return AuditEvent(
        kind=kind,
        run_id=run_id,
        runbook={"path": "deploy.py", "sha256": "ab"},
        step=step,
        actor=actor,
        host="host-a",
        env="prod",
        at=(T0 + timedelta(minutes=i)).isoformat(),
        params={"version": "1"},
        data={"attempt": i, "ratio": 0.1, "note": "héllo"},
    )


@pytest.fixture
def sink(pg_url: str):
    s = PostgresSink(pg_url)
    yield s
    s.close()


def fill(sink: PostgresSink, count: int = 5) -> list[AuditEvent]:
    return [sink.append(event(i)) for i in range(count)]


def test_plugin_opens_the_sink_with_best_effort(pg_url: str) -> None:
    s = Plugins().open("audit", pg_url, best_effort=True)
    try:
        assert isinstance(s, PostgresSink) and s.best_effort is True
    finally:
        s.close()


def test_append_chains_and_events_round_trip(sink: PostgresSink) -> None:
    stored = fill(sink, 3)
    assert [e.seq for e in stored] == [1, 2, 3]
    assert stored[0].prev_hash == GENESIS
    assert stored[1].prev_hash == stored[0].hash
    assert list(sink.events()) == stored
    report = sink.verify()
    assert report.ok and report.checked == 3


def test_queries_are_served_by_sql(sink: PostgresSink) -> None:
    sink.append(event(0, run_id="r1", kind="run_started", step=None))
    sink.append(event(1, run_id="r1", step="plan", actor="alice"))
    sink.append(event(2, run_id="r2", step="plan", actor="bob"))
    sink.append(event(3, run_id="r2", kind="approval_granted", step="switch", actor="carol"))
    sink.append(event(4, run_id="r1", kind="run_finished", step=None))

    def seqs(**query) -> list[int | None]:
        return [e.seq for e in sink.events(AuditQuery(**query))]

    assert seqs(run_id="r1") == [1, 2, 5]
    assert seqs(step="plan") == [2, 3]
    assert seqs(kind="approval_granted") == [4]
    assert seqs(actor="bob") == [3]
    assert seqs(since=T0 + timedelta(minutes=2)) == [3, 4, 5]
    assert seqs(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [2, 3, 4]
    assert seqs(run_id="r1", limit=2) == [1, 2]
    assert seqs(run_id="nope") == []


def test_events_page_through_long_trails(sink: PostgresSink, monkeypatch) -> None:
    import runbook_postgres.audit as audit

    monkeypatch.setattr(audit, "_PAGE", 3)
    fill(sink, 10)
    assert [e.seq for e in sink.events()] == list(range(1, 11))
    assert [e.seq for e in sink.events(AuditQuery(limit=7))] == list(range(1, 8))
    assert sink.verify().checked == 10


def test_update_and_delete_are_refused_by_the_table(
    sink: PostgresSink, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    fill(sink, 2)
    for statement in (
        sql.SQL("UPDATE {} SET actor = 'mallory'").format(_events(pg_schema)),
        sql.SQL("DELETE FROM {}").format(_events(pg_schema)),
        sql.SQL("TRUNCATE {}").format(_events(pg_schema)),
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            pg_admin.execute(statement)
    assert sink.verify().ok


def _as_replica(admin: psycopg.Connection, statement: sql.Composed, *args) -> None:
    """What a superuser can still do: skip the triggers for one transaction."""
    with admin.transaction():
        admin.execute("SET LOCAL session_replication_role = replica")
        admin.execute(statement, args)


def test_edited_event_json_is_named_by_verify(
    sink: PostgresSink, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    stored = fill(sink, 5)
    body = stored[2].to_dict()
    body["actor"] = "mallory"  # the column too, so only the hash can tell
    _as_replica(
        pg_admin,
        sql.SQL("UPDATE {} SET event = %s, actor = %s WHERE seq = 3").format(_events(pg_schema)),
        json.dumps(body, sort_keys=True, separators=(",", ":")),
        "mallory",
    )
    report = sink.verify()
    assert not report.ok and report.seq == 3
    assert "edited" in str(report)


def test_edited_indexed_column_is_named_by_verify(
    sink: PostgresSink, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    fill(sink, 4)
    _as_replica(
        pg_admin,
        sql.SQL("UPDATE {} SET run_id = %s WHERE seq = 2").format(_events(pg_schema)),
        "other-run",
    )
    report = sink.verify()
    assert not report.ok and report.seq == 2 and "run_id" in report.problem


def test_deleted_event_is_named_by_verify(
    sink: PostgresSink, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    fill(sink, 5)
    _as_replica(pg_admin, sql.SQL("DELETE FROM {} WHERE seq = 3").format(_events(pg_schema)))
    report = sink.verify()
    assert not report.ok and report.seq == 4 and "event 3 removed" in report.problem


def test_forged_inserted_event_is_named_by_verify(
    sink: PostgresSink, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    stored = fill(sink, 3)
    # A well-formed event with a self-consistent hash, but not linked to the real chain head.
    forged = event(9, actor="mallory").chained(4, "f" * 64)
    pg_admin.execute(
        sql.SQL(
            "INSERT INTO {} (seq, run_id, step, kind, actor, at, event,"
            " prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(_events(pg_schema)),
        (
            4,
            forged.run_id,
            forged.step,
            forged.kind,
            forged.actor,
            datetime.fromisoformat(forged.at),
            json.dumps(forged.to_dict(), sort_keys=True, separators=(",", ":")),
            forged.prev_hash,
            forged.hash,
        ),
    )
    report = sink.verify()
    assert not report.ok and report.seq == 4 and "does not link" in report.problem
    # Appending after the forgery still works; the chain stays broken at the forged event.
    assert sink.append(event(10)).prev_hash == forged.hash
    assert stored[-1].seq == 3


def test_unreadable_event_json_is_named_by_verify(
    sink: PostgresSink, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    fill(sink, 2)
    _as_replica(
        pg_admin,
        sql.SQL("UPDATE {} SET event = %s WHERE seq = 2").format(_events(pg_schema)),
        "{not json",
    )
    report = sink.verify()
    assert not report.ok and report.seq == 2 and "not valid event JSON" in report.problem
    with pytest.raises(AuditError, match="event 2 is not a readable audit event"):
        list(sink.events())


@pytest.mark.slow
def test_concurrent_appenders_in_several_processes_form_one_chain(pg_url: str, spawn) -> None:
    procs = [spawn("audit_worker.py", pg_url, f"proc-{i}", "40") for i in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    sink = PostgresSink(pg_url)
    try:
        events = list(sink.events())
        assert [e.seq for e in events] == list(range(1, 121))
        assert {e.run_id for e in events} == {"proc-0", "proc-1", "proc-2"}
        report = sink.verify()
        assert report.ok and report.checked == 120
    finally:
        sink.close()


def test_lost_connection_fails_one_append_then_recovers(
    sink: PostgresSink, pg_admin: psycopg.Connection, pg_schema: str, terminate
) -> None:
    fill(sink, 2)
    assert terminate(pg_schema) >= 1
    with pytest.raises(AuditError, match=r"PostgreSQL audit sink .*: append step_started event"):
        sink.append(event(2))
    assert sink.append(event(3)).seq == 3  # the failed append left no trace
    assert sink.verify().ok


def test_unreachable_server_is_an_audit_error_without_the_password() -> None:
    with pytest.raises(AuditError) as info:
        PostgresSink("postgresql://audit:pa55word@127.0.0.1:1/db?connect_timeout=2")
    assert "pa55word" not in str(info.value) and "audit:***@" in str(info.value)


def test_the_postgres_store_witnesses_the_postgres_sink_and_verify_finds_a_cut_tail(
    pg_url: str, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    """Store and sink in one database, as a team runs them: a superuser who deletes the last
    events (triggers bypassed) leaves a valid, shorter chain; the store's witness names it."""
    from click.testing import CliRunner
    from runbook_postgres.store import PostgresStore

    from runbook.audit.log import AuditLog
    from runbook.cli import cli

    store = PostgresStore(pg_url)
    log = AuditLog(PostgresSink(pg_url), store=store)
    try:
        for i in range(6):
            log.append(event(i, run_id="r1" if i < 3 else "r2"))
        (w1, w2) = store.audit_witnesses(log.chain_id)
        assert (w1.run_id, w1.seq, w2.run_id, w2.seq) == ("r1", 3, "r2", 6)
        assert log.chain_id == f"postgresql://127.0.0.1:5432/test?schema={pg_schema}"
    finally:
        log.close()
        store.close()
    verify = ["audit", "verify", "--sink", pg_url, "--store", pg_url]
    assert CliRunner().invoke(cli, verify).exit_code == 0
    _as_replica(pg_admin, sql.SQL("DELETE FROM {} WHERE seq > 4").format(_events(pg_schema)))
    result = CliRunner().invoke(cli, verify)
    assert result.exit_code == 1
    assert "TAMPERED at seq 5: truncated: the trail ends at seq 4" in result.output
    assert "events 5..6 are missing (run r2 (to seq 6))" in result.output
