"""The SQLite store's transactions (``SqliteStore.transaction`` and each method's own): one
commit for everything inside, rollback and a clear error otherwise, never shared with another
thread or a forked child. And the row encoders' shortcuts, which must not change a byte."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from runbook.errors import RunNotFound, StoreError
from runbook.store import sqliterows
from runbook.store.sqlite import SqliteStore
from runbook.testing.store_contract import make_run, make_step


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runbook.db"


@pytest.fixture
def store(db: Path):
    with SqliteStore(db) as opened:
        opened.create_run(make_run())
        yield opened


def traced(store: SqliteStore) -> list[str]:
    statements: list[str] = []
    assert store._conn is not None
    store._conn.set_trace_callback(statements.append)
    return statements


def test_store_methods_inside_a_transaction_are_part_of_its_one_commit(
    store: SqliteStore,
) -> None:
    statements = traced(store)
    with store.transaction("record a step in", sync=False) as conn:
        store.save_steps([make_step(name="a"), make_step(name="b", status="running")])
        store.witness_audit("run-1", "jsonl:///t", 7, "ab" * 32)
        store.save_step(make_step(name="c"))
        assert store.get_run("run-1").run_id == "run-1"  # a read joins it too
        with store.transaction() as inner:  # so does a nested transaction
            assert inner is conn
            store.update_run("run-1", status="paused")
    assert [s for s in statements if s in ("BEGIN", "BEGIN IMMEDIATE", "COMMIT")] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    assert list(store.get_steps("run-1")) == ["a", "b", "c"]
    assert [(w.seq, w.chain) for w in store.audit_witnesses()] == [(7, "jsonl:///t")]
    assert store.get_run("run-1").status == "paused"
    assert store._depth == 0 and store._owner is None


def test_a_block_that_raises_is_rolled_back_and_the_store_goes_on(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="refused"), store.transaction():
        store.save_step(make_step(name="lost"))
        store.witness_audit("run-1", "jsonl:///t", 1, "ab" * 32)
        raise ValueError("refused by the test")
    assert store.get_steps("run-1") == {} and store.audit_witnesses() == []
    assert store._depth == 0
    store.save_step(make_step(name="kept"))  # its own commit, the lock released
    assert list(store.get_steps("run-1")) == ["kept"]


def test_a_sqlite_error_inside_is_a_store_error_naming_the_action(store: SqliteStore) -> None:
    with (
        pytest.raises(StoreError, match="record a step in") as info,
        store.transaction("record a step in") as conn,
    ):
        store.save_step(make_step(name="lost"))
        conn.execute("INSERT INTO no_such_table VALUES (1)")
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert store.get_steps("run-1") == {}
    store.save_step(make_step(name="kept"))
    assert list(store.get_steps("run-1")) == ["kept"]


def test_a_commit_that_fails_is_rolled_back_and_a_store_error(store: SqliteStore) -> None:
    # A deferred foreign key is checked at COMMIT: the commit itself fails.
    with pytest.raises(StoreError, match="write to") as info, store.transaction() as conn:
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("INSERT INTO steps (run_id, name, status) VALUES ('ghost', 'x', 'ok')")
        store.save_step(make_step(name="lost"))
    assert "FOREIGN KEY" in str(info.value.__cause__)
    assert store._conn is not None and not store._conn.in_transaction
    assert store.get_steps("run-1") == {} and store.get_steps("ghost") == {}
    store.save_step(make_step(name="kept"))
    assert list(store.get_steps("run-1")) == ["kept"]


def test_a_transaction_the_block_ended_itself_is_not_ended_twice(store: SqliteStore) -> None:
    # Committed inside: the store's own COMMIT then fails, and nothing is rolled back.
    with pytest.raises(StoreError, match="write to") as info, store.transaction() as conn:
        store.save_step(make_step(name="kept"))
        conn.execute("COMMIT")
    assert "no transaction is active" in str(info.value.__cause__)
    # Rolled back inside, then the block raised: its error, no second ROLLBACK.
    with pytest.raises(ValueError, match="after"), store.transaction() as conn:
        store.save_step(make_step(name="lost"))
        conn.execute("ROLLBACK")
        raise ValueError("after the rollback")
    assert list(store.get_steps("run-1")) == ["kept"]
    assert store._depth == 0


def test_another_thread_waits_for_the_transaction_instead_of_joining_it(
    store: SqliteStore,
) -> None:
    done = threading.Event()
    seen: list[list[str]] = []

    def other() -> None:
        store.save_step(make_step(name="other"))
        seen.append(list(store.get_steps("run-1")))
        done.set()

    with store.transaction():
        store.save_step(make_step(name="mine"))
        thread = threading.Thread(target=other)
        thread.start()
        assert not done.wait(0.2)  # blocked on the store until this commit
    thread.join(timeout=30)
    assert seen == [["mine", "other"]]


def test_the_store_closed_inside_a_transaction_refuses_the_next_write(
    store: SqliteStore,
) -> None:
    with pytest.raises(StoreError), store.transaction():
        store.close()
        store.save_step(make_step(name="after"))
    assert store._depth == 0


def _joins_from_forked_child(store: SqliteStore) -> None:
    raise SystemExit(0 if store._joined() is None else 3)


def test_a_child_forked_inside_a_transaction_does_not_join_it(store: SqliteStore) -> None:
    """The forking thread's copy of the store in the child must not write into the parent's
    open transaction (its connection, which SQLite forbids using across a fork). (Nor can the
    child write at all while it lasts: SQLite's in-process lock state was copied with it.)"""
    with store.transaction():
        assert store._joined() is store._conn
        child = multiprocessing.get_context("fork").Process(
            target=_joins_from_forked_child, args=(store,)
        )
        child.start()
        child.join(timeout=60)
    assert child.exitcode == 0


@pytest.mark.parametrize("foreign_keys", ["ON", "OFF"])
def test_a_run_deleted_behind_the_store_is_refused(
    store: SqliteStore, db: Path, foreign_keys: str
) -> None:
    """Every save checks the run's row, also for a run this store created and wrote before,
    and also when the step's row survived the run's (deleted without foreign keys)."""
    store.save_steps([make_step(name="a", status="running")])
    other = sqlite3.connect(db, isolation_level=None)
    other.execute(f"PRAGMA foreign_keys = {foreign_keys}")
    other.execute("DELETE FROM runs WHERE run_id = 'run-1'")
    other.close()
    for batch in ([make_step(name="a")], [make_step(name="a"), make_step(name="b")]):
        with pytest.raises(RunNotFound, match="run-1"):
            store.save_steps(batch)
        with pytest.raises(RunNotFound, match="run-1"), store.transaction():
            store.save_steps(batch)


# -- the encoders' shortcuts ---------------------------------------------------------------------


def test_a_datetime_written_again_is_the_same_text_and_others_are_their_own() -> None:
    """``_date`` remembers the last datetime it wrote (a step's start, written again with its
    outcome): equal instants in other zones, naive ones and new objects still get their text."""
    utc = datetime(2026, 5, 1, 12, 0, 0, 5, tzinfo=UTC)
    plus2 = datetime(2026, 5, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2026, 5, 1, 12, 0, 0, 5)
    later = utc + timedelta(microseconds=1)
    for value in (utc, utc, plus2, utc, naive, naive, later, utc, None, later):
        expected = (
            None
            if value is None
            else sqliterows.encode(make_step(started_at=value), "step")["started_at"]
        )
        assert sqliterows.stored_date(value) == expected
    assert sqliterows.stored_date(utc) == "2026-05-01T12:00:00.000005+00:00"
    assert sqliterows.stored_date(plus2) == "2026-05-01T12:00:00.000005+00:00"
    assert sqliterows.stored_date(later) == "2026-05-01T12:00:00.000006+00:00"


@pytest.mark.parametrize(
    "value",
    [None, 1, 1.5, "ü ✓ \u2028", [1, {"b": None}], {"z": 1, "a": [True, "x"]}, {"n": float("nan")}],
)
def test_json_columns_are_the_text_json_dumps_writes(value: object) -> None:
    assert sqliterows.dumps(value) == json.dumps(value, ensure_ascii=False)


def test_json_the_encoder_cannot_write_is_refused_as_json_dumps_refuses() -> None:
    for bad in ({1, 2}, {"a": object()}):
        with pytest.raises(TypeError):
            sqliterows.dumps(bad)
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        sqliterows.dumps(loop)
