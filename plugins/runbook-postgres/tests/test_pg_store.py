"""The PostgreSQL run store: the RunStore contract, migrations, corrupt rows, lost connections."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from runbook_postgres.store import MIGRATIONS, PostgresStore

from runbook.errors import ConfigError, RunNotFound, StoreCorrupt, StoreError
from runbook.plugins import Plugins
from runbook.store.base import ApprovalRecord, InterruptDecision, RunRecord, StepRecord
from runbook.testing.store_contract import CHECKS

pytestmark = pytest.mark.service

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def run(run_id: str = "r1", **changes) -> RunRecord:
    base = RunRecord(
        run_id=run_id,
        runbook_path="runbooks/deploy.py",
        runbook_sha256="ab" * 32,
        env="prod",
        actor="alice",
        status="running",
        params={"version": "1.2", "token": "***", "replicas": 3},
        host="host-a",
        pid=4242,
        options={"max_parallel": 8, "dry_run": False},
    )
    return base.evolve(**changes)


@pytest.fixture
def store(pg_url: str):
    s = PostgresStore(pg_url)
    yield s
    s.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_contract(check, pg_url: str) -> None:
    check(lambda: PostgresStore(pg_url))


def test_plugin_opens_the_store_for_postgresql_urls(pg_url: str) -> None:
    s = Plugins().open("store", pg_url)
    try:
        assert isinstance(s, PostgresStore) and s.url == pg_url
    finally:
        s.close()


def test_run_round_trips_with_json_and_utc_times(store: PostgresStore) -> None:
    store.create_run(run(created_at=T0))
    got = store.get_run("r1")
    assert got.evolve(updated_at=None) == run(created_at=T0)
    assert got.created_at == T0
    assert got.created_at is not None and got.created_at.tzinfo is not None
    assert got.updated_at is not None and got.updated_at.utcoffset() == timedelta(0)


def test_created_at_defaults_to_now(store: PostgresStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    store.create_run(run())
    got = store.get_run("r1")
    assert got.created_at is not None and got.created_at > before
    assert got.updated_at is not None and got.updated_at >= got.created_at


def test_creating_a_run_twice_is_refused(store: PostgresStore) -> None:
    store.create_run(run())
    with pytest.raises(StoreError, match="'r1' already exists"):
        store.create_run(run(status="paused"))
    assert store.get_run("r1").status == "running"


def test_update_run_changes_fields_and_stamps_updated_at(store: PostgresStore) -> None:
    store.create_run(run(created_at=T0))
    first = store.get_run("r1").updated_at
    updated = store.update_run(
        "r1",
        status="failed",
        error="boom",
        pid=7,
        params={"version": "2"},
        options={"dry_run": True},
    )
    assert (updated.status, updated.error, updated.pid) == ("failed", "boom", 7)
    assert updated.params == {"version": "2"} and updated.options == {"dry_run": True}
    assert first is not None and updated.updated_at is not None
    assert updated.updated_at > first and updated.created_at == T0
    assert store.get_run("r1") == updated


def test_update_run_refuses_unknown_fields_and_unknown_runs(store: PostgresStore) -> None:
    store.create_run(run())
    with pytest.raises(TypeError, match="colour"):
        store.update_run("r1", colour="blue")
    changes = {"run_id": "r2"}  # a caller passing on a dict of changes
    with pytest.raises(TypeError, match="run_id"):
        store.update_run("r1", **changes)
    with pytest.raises(RunNotFound, match="'nope'"):
        store.update_run("nope", status="failed")
    with pytest.raises(RunNotFound, match="'nope'"):
        store.get_run("nope")


def test_list_runs_newest_first_filtered_and_limited(store: PostgresStore) -> None:
    for i in range(5):
        store.create_run(
            run(
                f"r{i}",
                created_at=T0 + timedelta(minutes=i),
                status="paused" if i % 2 else "succeeded",
            )
        )
    store.create_run(run("same-time-later", created_at=T0 + timedelta(minutes=4)))
    assert [r.run_id for r in store.list_runs()] == [
        "same-time-later",
        "r4",
        "r3",
        "r2",
        "r1",
        "r0",
    ]
    assert [r.run_id for r in store.list_runs(status="paused")] == ["r3", "r1"]
    assert [r.run_id for r in store.list_runs(limit=2)] == ["same-time-later", "r4"]
    assert store.list_runs(status="cancelled") == []


def test_steps_upsert_and_keep_json_outputs(store: PostgresStore) -> None:
    store.create_run(run())
    output = {
        "target": "green",
        "n": 3,
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "nested": [1, "two", {"三": 3}],
    }
    store.save_step(StepRecord("r1", "plan", "running", attempts=1, started_at=T0))
    store.save_step(
        StepRecord(
            "r1",
            "plan",
            "succeeded",
            output=output,
            attempts=1,
            started_at=T0,
            finished_at=T0 + timedelta(seconds=2),
            duration=2.0,
            completed_seq=1,
        )
    )
    store.save_step(StepRecord("r1", "verify", "skipped", reason="when"))
    store.save_step(StepRecord("r1", "text", "succeeded", output="plain string"))
    steps = store.get_steps("r1")
    assert set(steps) == {"plan", "verify", "text"}
    assert steps["plan"] == StepRecord(
        "r1",
        "plan",
        "succeeded",
        output=output,
        attempts=1,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
        duration=2.0,
        completed_seq=1,
    )
    assert steps["verify"].reason == "when" and steps["verify"].output is None
    assert steps["text"].output == "plain string"
    assert store.get_steps("other") == {}


def test_step_of_an_unknown_run_is_refused(store: PostgresStore) -> None:
    with pytest.raises(RunNotFound, match="'ghost'"):
        store.save_step(StepRecord("ghost", "plan", "running"))


def test_approvals_in_order_and_by_step(store: PostgresStore) -> None:
    store.create_run(run())
    store.add_approval(ApprovalRecord("r1", "switch", "bob", "granted", "lgtm", at=T0))
    store.add_approval(ApprovalRecord("r1", "other", "carol", "denied", "no"))
    store.add_approval(ApprovalRecord("r1", "switch", "dave", "granted", auto=True))
    assert [a.actor for a in store.approvals("r1")] == ["bob", "carol", "dave"]
    switch = store.approvals("r1", "switch")
    assert [(a.actor, a.auto) for a in switch] == [("bob", False), ("dave", True)]
    assert switch[0] == ApprovalRecord("r1", "switch", "bob", "granted", "lgtm", at=T0)
    assert switch[1].at is not None  # stamped by the server
    with pytest.raises(RunNotFound):
        store.add_approval(ApprovalRecord("ghost", "switch", "bob", "granted"))


def test_interrupt_decisions(store: PostgresStore) -> None:
    store.create_run(run())
    store.add_interrupt_decision(InterruptDecision("r1", "stage", "retry", "bob", at=T0))
    store.add_interrupt_decision(InterruptDecision("r1", "migrate", "skip", "carol"))
    got = store.interrupt_decisions("r1")
    assert got[0] == InterruptDecision("r1", "stage", "retry", "bob", at=T0)
    assert [(d.step, d.choice) for d in got] == [("stage", "retry"), ("migrate", "skip")]
    assert store.interrupt_decisions("other") == []
    with pytest.raises(RunNotFound):
        store.add_interrupt_decision(InterruptDecision("ghost", "stage", "retry", "bob"))


def test_a_second_host_sees_the_same_runs(pg_url: str, store: PostgresStore) -> None:
    store.create_run(run())
    store.save_step(StepRecord("r1", "switch", "awaiting_approval"))
    other = PostgresStore(pg_url)  # what another host opens
    try:
        other.add_approval(ApprovalRecord("r1", "switch", "bob", "granted"))
        other.update_run("r1", status="running", host="host-b")
        assert store.get_run("r1").host == "host-b"
        assert [a.actor for a in store.approvals("r1", "switch")] == ["bob"]
        assert other.get_steps("r1")["switch"].status == "awaiting_approval"
    finally:
        other.close()


def test_concurrent_writers_from_threads(store: PostgresStore) -> None:
    store.create_run(run())

    def write(i: int) -> None:
        for attempt in range(5):
            store.save_step(
                StepRecord("r1", f"s{i}", "succeeded", output={"i": i}, attempts=attempt)
            )

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = store.get_steps("r1")
    assert {name: s.attempts for name, s in steps.items()} == {f"s{i}": 4 for i in range(8)}


# -- schema and migrations ----------------------------------------------------------------------


def test_schema_is_versioned(
    store: PostgresStore, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    row = pg_admin.execute(
        sql.SQL("SELECT version FROM {}.schema_version WHERE component = 'store'").format(
            sql.Identifier(pg_schema)
        )
    ).fetchone()
    assert row == (len(MIGRATIONS),)


def test_hosts_opening_at_once_migrate_once(
    pg_url: str, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    stores, errors = [], []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            stores.append(PostgresStore(pg_url))
        except Exception as exc:  # pragma: no cover - what the test is looking for
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == [] and len(stores) == 4
    rows = pg_admin.execute(
        sql.SQL("SELECT component, version FROM {}.schema_version").format(
            sql.Identifier(pg_schema)
        )
    ).fetchall()
    assert rows == [("store", len(MIGRATIONS))]


def test_newer_schema_than_the_plugin_is_refused(
    pg_url: str, store: PostgresStore, pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    pg_admin.execute(
        sql.SQL("UPDATE {}.schema_version SET version = 99").format(sql.Identifier(pg_schema))
    )
    with pytest.raises(StoreError, match="store version 99, newer than this runbook-postgres"):
        PostgresStore(pg_url)


def test_schema_option_must_be_an_identifier(pg_server: str) -> None:
    with pytest.raises(ConfigError, match="must be a plain SQL identifier"):
        PostgresStore(pg_server + '?schema=x";drop')


# -- bad rows and failures ----------------------------------------------------------------------


@pytest.mark.parametrize("column", ["params", "options"])
def test_bad_json_row_is_store_corrupt_naming_run_and_column(
    store: PostgresStore, pg_admin: psycopg.Connection, pg_schema: str, column: str
) -> None:
    store.create_run(run())
    pg_admin.execute(
        sql.SQL("UPDATE {}.runs SET {} = '[1, 2]'::jsonb").format(
            sql.Identifier(pg_schema), sql.Identifier(column)
        )
    )
    with pytest.raises(StoreCorrupt) as info:
        store.get_run("r1")
    assert "run 'r1'" in str(info.value) and f"column '{column}'" in str(info.value)
    with pytest.raises(StoreCorrupt):
        store.list_runs()


def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError) as info:
        PostgresStore("postgresql://deploy:s3cret-pw@127.0.0.1:1/db?connect_timeout=2")
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert message.startswith(
        "PostgreSQL store postgresql://deploy:***@127.0.0.1:1/db?"
        "connect_timeout=2: cannot open: connection failed"
    )
    assert "refused" in message.lower() or "failed" in message.lower()


def test_lost_connection_fails_one_write_then_recovers(
    pg_url: str, pg_schema: str, store: PostgresStore, pg_admin: psycopg.Connection, terminate
) -> None:
    store.create_run(run())
    store.save_step(StepRecord("r1", "stage", "succeeded", output={"color": "green"}))
    assert terminate(pg_schema) >= 1
    with pytest.raises(StoreError) as info:
        store.save_step(StepRecord("r1", "switch", "running"))
    message = str(info.value)
    assert "PostgreSQL store" in message and "save step switch of run r1" in message
    # The pool dropped its dead connection: the next call works, and nothing committed was lost.
    store.save_step(StepRecord("r1", "switch", "running"))
    steps = store.get_steps("r1")
    assert steps["stage"].output == {"color": "green"}
    assert steps["switch"].status == "running"


def test_a_role_without_create_rights_uses_a_migrated_schema(
    pg_server: str, pg_url: str, pg_schema: str, pg_admin: psycopg.Connection
) -> None:
    """Least privilege: after the first (privileged) open, runbook needs no DDL rights."""
    PostgresStore(pg_url).close()
    role = f"{pg_schema}_app"
    names = {"s": sql.Identifier(pg_schema), "role": sql.Identifier(role)}
    pg_admin.execute(sql.SQL("CREATE ROLE {role} LOGIN").format(**names))
    try:
        for statement in (
            "GRANT USAGE ON SCHEMA {s} TO {role}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {role}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {role}",
            "REVOKE CREATE ON SCHEMA {s} FROM PUBLIC",
        ):
            pg_admin.execute(sql.SQL(statement).format(**names))
        limited = pg_url.replace("postgresql://postgres@", f"postgresql://{role}@")
        store = PostgresStore(limited)
        try:
            store.create_run(run())
            assert store.get_run("r1").actor == "alice"
        finally:
            store.close()
    finally:
        pg_admin.execute(sql.SQL("DROP OWNED BY {role}").format(**names))
        pg_admin.execute(sql.SQL("DROP ROLE {role}").format(**names))


def test_save_steps_is_one_transaction_that_names_a_missing_run(store: PostgresStore) -> None:
    """A transition's rows in one executemany: all of them, or (a run missing) none of them."""
    store.create_run(run())
    steps = [StepRecord("r1", f"s{i}", "running", attempts=1) for i in range(8)]
    store.save_steps(steps)
    assert list(store.get_steps("r1").values()) == steps
    with pytest.raises(RunNotFound, match="ghost"):
        store.save_steps([StepRecord("r1", "new", "running"), StepRecord("ghost", "x", "running")])
    assert "new" not in store.get_steps("r1")
