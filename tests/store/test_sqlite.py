"""The SQLite run store: what the shared contract cannot check (files, schema, processes)."""

from __future__ import annotations

import hashlib
import multiprocessing
import select
import sqlite3
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from runbook.errors import RunNotFound, StoreCorrupt, StoreError, UsageError
from runbook.plugins import Plugins
from runbook.store import sqlite as sqlite_store
from runbook.store import sqliterows
from runbook.store.base import ApprovalRecord, InterruptDecision, RunRecord, StepRecord
from runbook.store.sqlite import MIGRATIONS, SqliteStore, connect, migrate
from runbook.testing.store_contract import T0, make_run, make_step

WORKER = Path(__file__).with_name("store_worker.py")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / ".runbook" / "runbook.db"


@pytest.fixture
def store(db: Path):
    with SqliteStore(db) as opened:
        yield opened


def raw(db: Path) -> sqlite3.Connection:
    """A plain connection, to look at or damage the file behind the store's back."""
    return sqlite3.connect(db, isolation_level=None)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- files and URLs ------------------------------------------------------------------------------


def test_creates_parent_folders_and_persists_across_reopen(db: Path) -> None:
    with SqliteStore(db) as store:
        store.create_run(make_run())
        store.save_step(make_step())
        store.add_approval(ApprovalRecord("run-1", "stage", "bob", "granted", "ok", T0))
        store.add_interrupt_decision(InterruptDecision("run-1", "stage", "retry", "bob", T0))
    assert db.is_file()
    with SqliteStore(db) as store:
        assert store.get_run("run-1").evolve(updated_at=None) == make_run()
        assert store.get_steps("run-1") == {"stage": make_step()}
        assert [a.comment for a in store.approvals("run-1")] == ["ok"]
        assert [d.choice for d in store.interrupt_decisions("run-1")] == ["retry"]


def test_relative_url_is_relative_to_the_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plugins = Plugins(entry_points=False, defaults=("runbook.store.sqlite",))
    store = plugins.open("store", "sqlite:///state/run.db")
    try:
        assert store.url == "sqlite:///state/run.db"
        assert store.path == tmp_path / "state" / "run.db"
        assert store.path.is_file()
    finally:
        store.close()


def test_absolute_url_and_timeout_option(tmp_path: Path) -> None:
    plugins = Plugins(entry_points=False, defaults=("runbook.store.sqlite",))
    store = plugins.open("store", f"sqlite:///{tmp_path}/abs.db?timeout=2.5")
    try:
        assert store.path == tmp_path / "abs.db"
        ms = store._conn.execute("PRAGMA busy_timeout").fetchone()[0]
        assert ms == 2500
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "has no file path"),
        ("sqlite://host/x.db", "has no file path"),
        ("sqlite:///x.db?timeout=soon", "timeout must be a number"),
        ("sqlite:///x.db?mode=ro", "unknown sqlite:// URL option(s): mode"),
    ],
)
def test_bad_urls_are_usage_errors(url: str, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        sqlite_store.open_url(url)
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_connect_applies_the_pragmas_for_other_components(tmp_path: Path) -> None:
    conn = connect(tmp_path / "a" / "b" / "shared.db", timeout=3)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 3000
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.isolation_level is None
    finally:
        conn.close()


def test_a_new_store_file_is_not_world_readable(db: Path) -> None:
    SqliteStore(db).close()
    assert db.stat().st_mode & 0o777 == 0o640


def test_connect_to_an_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=str(tmp_path)):
        connect(tmp_path)  # a folder


def test_closed_store_refuses_work(db: Path) -> None:
    store = SqliteStore(db)
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.list_runs()


# -- records -------------------------------------------------------------------------------------


def test_every_record_field_has_a_column(store: SqliteStore) -> None:
    """A field added to a record in store/base.py needs a migration here."""
    tables = {
        RunRecord: "runs",
        StepRecord: "steps",
        ApprovalRecord: "approvals",
        InterruptDecision: "interrupt_decisions",
    }
    for record, table in tables.items():
        columns = {row[1] for row in store._conn.execute(f"PRAGMA table_info({table})")}
        assert {f.name for f in fields(record)} <= columns, table


def test_datetimes_are_stored_as_utc_iso_text(store: SqliteStore, db: Path) -> None:
    plus2 = timezone(timedelta(hours=2))
    store.create_run(make_run(created_at=datetime(2026, 5, 1, 14, 0, tzinfo=plus2)))
    store.save_step(make_step(started_at=datetime(2026, 5, 1, 12, 0), finished_at=None))
    text = raw(db).execute("SELECT created_at FROM runs").fetchone()[0]
    assert text == "2026-05-01T12:00:00.000000+00:00"
    run = store.get_run("run-1")
    assert run.created_at == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert run.created_at.tzinfo == UTC
    step = store.get_steps("run-1")["stage"]
    assert step.started_at == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)  # naive is taken as UTC
    assert step.finished_at is None


def test_json_columns_are_json_text(store: SqliteStore, db: Path) -> None:
    store.create_run(make_run(params={"v": "ünï"}, options={"dry_run": True}))
    store.save_step(make_step(output=["a", 1]))
    conn = raw(db)
    assert conn.execute("SELECT params, options FROM runs").fetchone() == (
        '{"v": "ünï"}',
        '{"dry_run": true}',
    )
    assert conn.execute("SELECT output FROM steps").fetchone()[0] == '["a", 1]'


def test_output_that_is_not_json_is_refused_and_nothing_written(store: SqliteStore) -> None:
    store.create_run(make_run())
    with pytest.raises(StoreError, match="step 'stage' of run 'run-1': output"):
        store.save_step(make_step(output={1, 2}))
    assert store.get_steps("run-1") == {}


def test_duplicate_run_id_is_refused(store: SqliteStore) -> None:
    store.create_run(make_run(actor="alice"))
    with pytest.raises(StoreError, match="already exists"):
        store.create_run(make_run(actor="mallory"))
    assert store.get_run("run-1").actor == "alice"


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.save_step(make_step("ghost")),
        lambda s: s.add_approval(ApprovalRecord("ghost", "stage", "bob", "granted")),
        lambda s: s.add_interrupt_decision(InterruptDecision("ghost", "stage", "skip", "bob")),
        lambda s: s.update_run("ghost", status="failed"),
    ],
    ids=["save_step", "add_approval", "add_interrupt_decision", "update_run"],
)
def test_writes_for_an_unknown_run_raise_run_not_found(store: SqliteStore, write) -> None:
    with pytest.raises(RunNotFound, match="ghost"):
        write(store)


def test_update_run_cannot_change_the_id(store: SqliteStore) -> None:
    store.create_run(make_run())
    with pytest.raises(TypeError, match="run_id"):
        store.update_run("run-1", run_id="other")


def test_list_runs_breaks_timestamp_ties_newest_insert_first(db: Path) -> None:
    with SqliteStore(db, now=lambda: T0) as store:
        for run_id in ("a", "b", "c"):
            store.create_run(make_run(run_id, created_at=None))
        assert [r.run_id for r in store.list_runs()] == ["c", "b", "a"]
        assert store.update_run("a", status="failed").updated_at == T0


def test_a_busy_store_is_a_clear_store_error(db: Path) -> None:
    with SqliteStore(db, timeout=0.05) as store:
        blocker = raw(db)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="stayed locked by another process"):
                store.create_run(make_run())
        finally:
            blocker.execute("ROLLBACK")
        store.create_run(make_run())  # and it recovers once the other writer is done
        assert store.get_run("run-1").run_id == "run-1"


# -- schema versions -----------------------------------------------------------------------------


def test_new_file_gets_the_current_schema_version(store: SqliteStore, db: Path) -> None:
    assert raw(db).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 4


def test_a_version_1_file_gains_approval_data_keeping_its_approvals(db: Path) -> None:
    conn = connect(db)
    migrate(conn, MIGRATIONS[:1], path=db)
    conn.execute(
        "INSERT INTO runs (run_id, runbook_path, runbook_sha256, env, actor, status, created_at,"
        " updated_at) VALUES ('r1', 'x.py', 'abc', 'dev', 'al', 'paused', '2026-01-01T00:00:00',"
        " '2026-01-01T00:00:00')"
    )
    conn.execute(
        "INSERT INTO approvals (run_id, step, actor, decision) VALUES ('r1', 'go', 'bo', 'granted')"
    )
    conn.close()
    with SqliteStore(db) as store:
        (old,) = store.approvals("r1")
        assert (old.actor, old.data) == ("bo", {})
        store.add_approval(ApprovalRecord("r1", "go", "cy", "granted", data={"plan_hash": "h"}))
        assert store.approvals("r1")[1].data == {"plan_hash": "h"}


def test_migrates_an_older_version_once_keeping_data(db: Path, monkeypatch) -> None:
    with SqliteStore(db) as store:
        store.create_run(make_run())
    calls: list[int] = []

    def v2(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("ALTER TABLE runs ADD COLUMN ticket TEXT")
        conn.execute("UPDATE runs SET ticket = 'OPS-1'")

    monkeypatch.setattr(sqlite_store, "MIGRATIONS", [*MIGRATIONS, v2])
    with SqliteStore(db) as store:
        assert store.get_run("run-1").actor == "alice@example.com"
    with SqliteStore(db):
        pass
    conn = raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    assert conn.execute("SELECT ticket FROM runs").fetchone()[0] == "OPS-1"
    assert calls == [1]


def test_a_failing_migration_changes_nothing(db: Path, monkeypatch) -> None:
    SqliteStore(db).close()

    def broken_v2(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        conn.execute("ALTER TABLE no_such_table ADD COLUMN y")

    monkeypatch.setattr(sqlite_store, "MIGRATIONS", [*MIGRATIONS, broken_v2])
    with pytest.raises(StoreError, match="migrate the run store schema"):
        SqliteStore(db)
    conn = raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables


def test_a_newer_schema_version_is_refused_untouched(db: Path) -> None:
    with SqliteStore(db) as store:
        store.create_run(make_run())
    raw(db).execute("PRAGMA user_version = 7")
    before = sha(db)
    with pytest.raises(StoreCorrupt) as info:
        SqliteStore(db)
    message = str(info.value)
    assert str(db) in message and "version 7" in message and "newer runbook" in message
    assert sha(db) == before


def test_other_components_tables_survive_and_version_separately(db: Path) -> None:
    conn = connect(db)
    audit_v1 = [lambda c: c.execute("CREATE TABLE audit_events (seq INTEGER PRIMARY KEY)")]
    assert migrate(conn, audit_v1, path=db, component="audit") == 1
    conn.execute("INSERT INTO audit_events VALUES (1)")
    with SqliteStore(db) as store:  # the run store arrives second in a file it did not create
        store.create_run(make_run())
    assert migrate(conn, audit_v1, path=db, component="audit") == 1  # nothing to do
    assert conn.execute("SELECT seq FROM audit_events").fetchall() == [(1,)]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    with pytest.raises(StoreCorrupt, match="audit schema version 1"):
        migrate(conn, [], path=db, component="audit")
    conn.close()


# -- damaged files and rows ----------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_store_corrupt(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is a text file, not a database\n" * 200)
    before = sha(db)
    with pytest.raises(StoreCorrupt) as info:
        SqliteStore(db)
    assert str(db) in str(info.value) and "not a usable SQLite database" in str(info.value)
    assert sha(db) == before


@pytest.mark.parametrize(
    ("sql", "read", "where"),
    [
        ("UPDATE runs SET params = '{oops'", lambda s: s.get_run("r1"), "runs.params"),
        ("UPDATE runs SET options = '[1]'", lambda s: s.list_runs(), "runs.options"),
        ("UPDATE runs SET created_at = 'yesterday'", lambda s: s.list_runs(), "runs.created_at"),
        ("UPDATE steps SET output = 'nope'", lambda s: s.get_steps("r1"), "steps.output"),
        ("UPDATE approvals SET at = 'noon'", lambda s: s.approvals("r1"), "approvals.at"),
        (
            "UPDATE interrupt_decisions SET at = 5",
            lambda s: s.interrupt_decisions("r1"),
            "interrupt_decisions.at",
        ),
        (
            "UPDATE audit_witness SET seq = 'abc'",
            lambda s: s.audit_witnesses("jsonl:///trail"),
            "audit_witness",
        ),
        (
            "UPDATE audit_witness SET hash = x'0102'",
            lambda s: s.audit_witness("r1", "jsonl:///trail"),
            "audit_witness",
        ),
    ],
)
def test_a_row_that_cannot_be_decoded_is_store_corrupt(
    store: SqliteStore, db: Path, sql: str, read, where: str
) -> None:
    store.create_run(make_run("r1"))
    store.save_step(make_step("r1"))
    store.add_approval(ApprovalRecord("r1", "stage", "bob", "granted", at=T0))
    store.add_interrupt_decision(InterruptDecision("r1", "stage", "skip", "bob", at=T0))
    store.witness_audit("r1", "jsonl:///trail", 3, "ab" * 32)
    raw(db).execute(sql)
    with pytest.raises(StoreCorrupt) as info:
        read(store)
    message = str(info.value)
    assert str(db) in message and "run 'r1'" in message and where in message


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        (
            "UPDATE runs SET params = '{oops'",
            "column runs.params is not valid JSON (JSONDecodeError)",
        ),
        ("UPDATE runs SET params = '[1, 2]'", "column runs.params is not a JSON object;"),
        ("UPDATE runs SET created_at = 'noon'", "runs.created_at is not a valid ISO-8601 datetime"),
    ],
)
def test_a_corrupt_column_is_named_with_what_is_wrong_with_it(
    store: SqliteStore, db: Path, sql: str, says: str
) -> None:
    store.create_run(make_run("r1"))
    raw(db).execute(sql)
    with pytest.raises(StoreCorrupt) as info:
        store.get_run("r1")
    assert says in str(info.value) and str(info.value).endswith(
        "the row was not written by runbook"
    )


def test_a_corrupt_run_is_not_modified_by_update(store: SqliteStore, db: Path) -> None:
    store.create_run(make_run("r1"))
    raw(db).execute("UPDATE runs SET params = '{oops'")
    with pytest.raises(StoreCorrupt, match="run 'r1'"):
        store.update_run("r1", status="failed")
    assert raw(db).execute("SELECT status, params FROM runs").fetchone() == ("running", "{oops")


# -- processes -----------------------------------------------------------------------------------


def _write_from_forked_child(store: SqliteStore) -> None:
    store.create_run(make_run("from-child"))


def test_a_forked_child_uses_its_own_connection(store: SqliteStore) -> None:
    store.create_run(make_run("from-parent"))
    child = multiprocessing.get_context("fork").Process(
        target=_write_from_forked_child, args=(store,)
    )
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert {r.run_id for r in store.list_runs()} == {"from-parent", "from-child"}


@pytest.mark.slow
def test_several_processes_write_concurrently_without_losing_rows(db: Path) -> None:
    workers, runs = 4, 50  # 4 processes x 200 writes (4 per run)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(db), str(w), str(runs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    try:
        for proc in procs:  # bounded wait for each process to have opened the store
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready and proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:  # then release them all at once
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out.strip() == "done" and err == "", err
    with SqliteStore(db) as store:
        all_runs = store.list_runs(limit=10_000)
        assert len(all_runs) == workers * runs
        assert {r.status for r in all_runs} == {"succeeded"}
        for w in range(workers):
            for i in (0, runs - 1):
                run_id = f"w{w}-{i}"
                assert store.get_steps(run_id)["stage"].output == {"i": i}
                assert [a.actor for a in store.approvals(run_id)] == ["bob"]


# -- a transition's rows at once -----------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        make_step(),
        make_step(output=None, started_at=None, finished_at=None, duration=None),
        make_step(output={"ü": "✓"}, started_at=datetime(2026, 5, 1, 12, 0), rollback="running"),
        make_step(started_at=datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))),
    ],
    ids=["every field", "nothing yet", "unicode and naive", "another zone"],
)
def test_a_step_row_is_encoded_as_every_record_is(step: StepRecord) -> None:
    """The step's positional encoder (the hot path) must agree with the generic one, column for
    column, or a row saved with save_steps would read back differently."""
    generic = sqliterows.encode(step, "step")
    assert tuple(generic) == sqliterows.STEP_COLUMNS
    assert sqliterows.step_row(step) == tuple(generic.values())


def test_save_steps_checks_the_run_inside_its_one_statement_and_writes_all_or_nothing(
    store: SqliteStore, db: Path
) -> None:
    """A run's transition is BEGIN, one upsert run over its rows (each checking the run's row
    in the statement), COMMIT: no SELECT of its own (it cost a third of the upsert)."""
    store.create_run(make_run())
    statements: list[str] = []
    assert store._conn is not None
    store._conn.set_trace_callback(statements.append)
    store.save_steps([make_step(name=f"s{i}", output=i) for i in range(16)])
    store._conn.set_trace_callback(None)
    assert [s.split()[0] for s in statements] == ["BEGIN", *["INSERT"] * 16, "COMMIT"]
    assert all("EXISTS (SELECT 1 FROM runs" in s for s in statements[1:-1])
    assert [s.output for s in store.get_steps("run-1").values()] == list(range(16))
    # a ghost run among them, or an output JSON cannot hold: none of the rows is written
    with pytest.raises(RunNotFound, match="ghost"):
        store.save_steps([make_step(name="new", output=1), make_step("ghost", "x")])
    with pytest.raises(StoreError, match="step 'bad' of run 'run-1': output"):
        store.save_steps([make_step(name="new", output=1), make_step(name="bad", output={1})])
    assert "new" not in store.get_steps("run-1")
