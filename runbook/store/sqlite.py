"""``sqlite://``: the default run store, one SQLite file shared by every process of a project.

SQLite because a run store must survive ``kill -9`` and a lost terminal without a server to run:
each method is one committed transaction (``synchronous=FULL``), WAL lets ``runbook runs`` read
while a run writes, and ``busy_timeout`` makes a second writer (``runbook approve`` in another
terminal, a resume on the same host) wait for the first instead of failing.

The file is shared: the sqlite audit sink and the sqlite lock provider keep their own tables in it,
opened with their own connections through :func:`connect` (``runbook.store.sqlitedb``, re-exported
here). This module owns ``runs``, ``steps``, ``approvals`` and ``interrupt_decisions``, versions
them with ``PRAGMA user_version`` and never touches other tables.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from threading import get_ident
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from runbook.errors import RunNotFound, StoreCorrupt, StoreError, UsageError
from runbook.hookspecs import Provider, hookimpl
from runbook.store.base import (
    ApprovalRecord,
    AuditWitness,
    InterruptDecision,
    RunRecord,
    StepRecord,
)
from runbook.store.sqlitedb import (
    BUSY_TIMEOUT,
    connect,
    migrate,
    path_from_url,
    synchronous_for,
    translate_error,
)
from runbook.store.sqliterows import (
    MIGRATIONS,
    TABLES,
    UPSERT_STEP,
    UPSERT_STEP_OF_RUN,
    WITNESS,
    R,
    decode,
    encode,
    insert_sql,
    step_row,
)
from runbook.store.walcheckpoint import WalCheckpointer

__all__ = ["MIGRATIONS", "SqliteStore", "connect", "migrate", "open_url", "path_from_url"]


# -- transactions --------------------------------------------------------------------------------


class _Tx:
    """A store transaction as a context manager: the lock, ``BEGIN``, then ``COMMIT`` (or
    ``ROLLBACK`` when the block raises), a ``sqlite3.Error`` raised as the store's error for
    ``action``. Entered on the thread already inside one, it is a part of that one: no statement
    of its own, and errors are left to the outer one to roll back and translate.

    A class, not a ``@contextmanager`` generator: every recorded transition enters one, and the
    generator's machinery cost more than the ``BEGIN`` and ``COMMIT`` statements themselves.
    """

    __slots__ = ("_action", "_conn", "_store", "_sync", "_write")

    def __init__(self, store: SqliteStore, action: str, write: bool, sync: bool) -> None:
        self._store = store
        self._action = action
        self._write = write
        self._sync = sync
        self._conn: sqlite3.Connection | None = None  # set when this one began the transaction

    def __enter__(self) -> sqlite3.Connection:
        store = self._store
        if store._pid != os.getpid():  # forked: never touch the parent's connection or lock
            store._forked()
        store._lock.acquire()
        try:
            if store._closed:
                raise StoreError(f"the run store {store.path} is closed")
            if store._depth:  # inside transaction() on this thread: part of that one commit
                assert store._conn is not None
                return store._conn
            if store._conn is None:
                store._conn = store._open()
            conn = store._conn
            try:
                if self._write:
                    synchronous = store._base if self._sync else "NORMAL"
                    if synchronous != store._synchronous:  # between transactions only
                        conn.execute(f"PRAGMA synchronous = {synchronous}")
                        store._synchronous = synchronous
                conn.execute("BEGIN IMMEDIATE" if self._write else "BEGIN")
            except sqlite3.Error as exc:
                raise translate_error(exc, store.path, self._action) from exc
            store._depth, store._owner = 1, get_ident()
            self._conn = conn
            return conn
        except BaseException:
            store._lock.release()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        try:
            conn = self._conn
            if conn is None:  # a part of the transaction around it: that one ends it
                return
            try:
                try:
                    if exc is None:
                        conn.execute("COMMIT")
                        if self._write:
                            store._checkpoints.committed(conn)
                        return
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error as error:
                raise translate_error(error, store.path, self._action) from error
            finally:
                store._depth, store._owner = 0, None
            if isinstance(exc, sqlite3.Error):
                raise translate_error(exc, store.path, self._action) from exc
        finally:
            store._lock.release()


# -- the store -----------------------------------------------------------------------------------


class SqliteStore:
    """A :class:`~runbook.store.base.RunStore` in one SQLite file.

    One connection per store object, serialised by a lock, so the event-loop thread and the
    worker threads of a run can share it; other processes use their own objects and SQLite's
    file locks. A forked child opens a fresh connection on first use instead of sharing the
    parent's, which SQLite forbids.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        url: str | None = None,
        timeout: float = BUSY_TIMEOUT,
        now: Callable[[], datetime] | None = None,
        durability: str = "power",
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.durability = durability
        self.url = url or f"sqlite:///{self.path}"
        self._timeout = timeout
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._closed = False
        # A forked parent's connection and checkpoint thread: kept, never used or closed.
        self._inherited: list[sqlite3.Connection | WalCheckpointer] = []
        self._depth = 0  # > 0 inside a transaction (held by the thread that holds _lock)
        self._owner: int | None = None  # that thread's ident (``_joined``)
        # The connection's ``PRAGMA synchronous`` now: the durability's, except while a
        # transaction that a synced audit trail already holds is committed (``transaction``).
        self._synchronous = self._base = synchronous_for(durability)
        self._checkpoints = self._checkpointer()
        self._conn: sqlite3.Connection | None = self._open()

    # A transaction may be committed without syncing the WAL (``sync=False``): the recorder does
    # so only for what a synced JSONL trail already holds (runbook.trail, docs/durable-runs.md).
    relaxed_commits = True

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path, timeout=self._timeout, durability=self.durability)
        self._synchronous = self._base
        try:
            migrate(conn, MIGRATIONS, path=self.path)
        except BaseException:
            conn.close()
            raise
        conn.row_factory = sqlite3.Row
        return conn

    def _checkpointer(self) -> WalCheckpointer:
        """The WAL's checkpoints, off the writer's thread once it writes a lot (walcheckpoint)."""
        return WalCheckpointer(
            self.path,
            lambda: connect(self.path, timeout=self._timeout, durability=self.durability),
        )

    def _forked(self) -> None:
        """In a forked child: a lock, a checkpointer and (on first use) a connection of its own;
        the parent's are kept, never used or closed (SQLite forbids sharing one across a fork)."""
        self._lock, self._pid, self._depth, self._owner = threading.RLock(), os.getpid(), 0, None
        self._inherited.append(self._checkpoints)
        self._checkpoints = self._checkpointer()
        if self._conn is not None:
            self._inherited.append(self._conn)
            self._conn = None

    def _tx(self, action: str, *, write: bool = False, sync: bool = True) -> _Tx:
        """One transaction around a store method (``BEGIN`` / ``BEGIN IMMEDIATE`` ... ``COMMIT``),
        or, on the thread inside ``transaction()``, a part of that one (see ``_Tx``)."""
        return _Tx(self, action, write, sync)

    def _joined(self) -> sqlite3.Connection | None:
        """The connection of the transaction this thread is inside (``transaction``), else None:
        what a store method called there writes through, without a context manager of its own
        (the hot path: a recorded transition calls two store methods inside one)."""
        if self._depth and self._owner == get_ident() and self._pid == os.getpid():
            if self._closed:
                raise StoreError(f"the run store {self.path} is closed")
            return self._conn
        return None

    def transaction(self, action: str = "write to", *, sync: bool = True) -> _Tx:
        """One write transaction (``BEGIN IMMEDIATE`` ... one ``COMMIT``) around several calls.

        Every store method called inside it on this thread joins it instead of committing on its
        own, and the connection it yields lets a component sharing the file (the sqlite audit
        sink) write its rows in the same commit: the recorder's one durable write per transition.
        Other threads wait for the commit, as they wait for any store method.

        ``sync=False``: committed with ``synchronous=NORMAL`` whatever the durability (it then
        survives a killed process, not a power cut; the next synced commit syncs it too). Only
        for what a synced audit trail already holds, which ``resume`` rolls the store forward
        from (runbook.trail).
        """
        return _Tx(self, action, True, sync)

    def _require_run(self, conn: sqlite3.Connection, run_id: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            raise RunNotFound(f"no run {run_id!r} in {self.url}")

    def create_run(self, run: RunRecord) -> None:
        now = self._now()
        run = replace(run, created_at=run.created_at or now, updated_at=now)
        row = encode(run, f"run {run.run_id!r}")
        with self._tx("create a run in", write=True) as conn:
            exists = conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
            if exists:
                raise StoreError(f"run {run.run_id!r} already exists in {self.url}")
            conn.execute(insert_sql("runs", row), row)

    def update_run(self, run_id: str, **changes: Any) -> RunRecord:
        if "run_id" in changes:
            raise TypeError("update_run() cannot change run_id")
        with self._tx("update a run in", write=True) as conn:
            run = self._get_run(conn, run_id)
            run = replace(run, updated_at=self._now(), **changes)
            row = encode(run, f"run {run_id!r}")
            sets = ", ".join(f"{k} = :{k}" for k in row if k != "run_id")
            conn.execute(f"UPDATE runs SET {sets} WHERE run_id = :run_id", row)
            return run

    def get_run(self, run_id: str) -> RunRecord:
        with self._tx("read a run from") as conn:
            return self._get_run(conn, run_id)

    def _get_run(self, conn: sqlite3.Connection, run_id: str) -> RunRecord:
        row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.url}")
        return decode(RunRecord, row, self.path, f"run {run_id!r}")

    def list_runs(self, *, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        where, args = ("WHERE status = ?", [status]) if status is not None else ("", [])
        with self._tx("list the runs in") as conn:
            rows = conn.execute(
                f"SELECT * FROM runs {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                [*args, max(limit, 0)],
            ).fetchall()
            return [decode(RunRecord, r, self.path, f"run {r['run_id']!r}") for r in rows]

    def save_step(self, step: StepRecord) -> None:
        self.save_steps((step,))

    def save_steps(self, steps: Sequence[StepRecord]) -> None:
        """The rows of one transition (a fan-out's starts and held outcomes) in one statement
        run over all of them, which checks the run's row itself (rows of several runs: one
        check per run first). Per row, a check and a statement of its own cost as much as the
        upsert."""
        if not steps:
            return
        rows = [step_row(step) for step in steps]
        conn = self._joined()
        if conn is not None:
            self._upsert_steps(conn, steps, rows)
            return
        with self._tx("save a step in", write=True) as conn:
            self._upsert_steps(conn, steps, rows)

    def _upsert_steps(
        self, conn: sqlite3.Connection, steps: Sequence[StepRecord], rows: list[tuple[Any, ...]]
    ) -> None:
        runs = dict.fromkeys(step.run_id for step in steps)
        if len(runs) > 1:  # rows of several runs: every run checked before any row is written
            for run_id in runs:
                self._require_run(conn, run_id)
            conn.executemany(UPSERT_STEP, rows)
            return
        # One run (every transition of a run): each row is written if its run's row exists, and
        # it exists for all of them or for none (the write lock is held), so nothing was
        # written when the count of rows changed is not theirs.
        changed = conn.executemany(UPSERT_STEP_OF_RUN, rows).rowcount
        if changed != len(rows):
            run_id = next(iter(runs))
            self._require_run(conn, run_id)
            raise StoreError(  # pragma: no cover - the run is there for all rows or for none
                f"saved {changed} of the {len(rows)} steps of run {run_id!r} in {self.url}"
            )

    def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        with self._tx("read the steps from") as conn:
            rows = conn.execute(
                "SELECT * FROM steps WHERE run_id = ? ORDER BY rowid", (run_id,)
            ).fetchall()
            return {
                r["name"]: decode(StepRecord, r, self.path, f"step {r['name']!r} of run {run_id!r}")
                for r in rows
            }

    def add_approval(self, approval: ApprovalRecord) -> None:
        self._append("approvals", approval)

    def approvals(self, run_id: str, step: str | None = None) -> list[ApprovalRecord]:
        return self._history(ApprovalRecord, run_id, step)

    def add_interrupt_decision(self, decision: InterruptDecision) -> None:
        self._append("interrupt_decisions", decision)

    def interrupt_decisions(self, run_id: str) -> list[InterruptDecision]:
        return self._history(InterruptDecision, run_id, None)

    def _append(self, table: str, record: ApprovalRecord | InterruptDecision) -> None:
        row = encode(record, f"{table} of run {record.run_id!r}")
        with self._tx(f"add to the {table} of", write=True) as conn:
            self._require_run(conn, record.run_id)
            conn.execute(insert_sql(table, row), row)

    def _history(self, cls: type[R], run_id: str, step: str | None) -> list[R]:
        table = TABLES[cls]
        sql = f"SELECT * FROM {table} WHERE run_id = ?"
        args: list[Any] = [run_id]
        if step is not None:
            sql, args = sql + " AND step = ?", [run_id, step]
        with self._tx(f"read the {table} from") as conn:
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
            return [decode(cls, r, self.path, f"{table} of run {run_id!r}") for r in rows]

    def witness_audit(self, run_id: str, chain: str, seq: int, hash: str) -> None:
        conn = self._joined()  # the recorder's transaction: the hot path
        if conn is not None:
            conn.execute(WITNESS, (run_id, chain, seq, hash))
            return
        with self._tx("witness an audit event in", write=True) as conn:
            conn.execute(WITNESS, (run_id, chain, seq, hash))

    def audit_witness(self, run_id: str, chain: str) -> AuditWitness | None:
        with self._tx("read an audit witness from") as conn:
            row = conn.execute(
                "SELECT seq, hash FROM audit_witness WHERE run_id = ? AND chain = ?",
                (run_id, chain),
            ).fetchone()
        return None if row is None else self._witness(run_id, chain, row["seq"], row["hash"])

    def audit_witnesses(self, chain: str | None = None) -> list[AuditWitness]:
        where, args = ("WHERE chain = ?", [chain]) if chain is not None else ("", [])
        with self._tx("read the audit witnesses from") as conn:
            rows = conn.execute(
                f"SELECT run_id, chain, seq, hash FROM audit_witness {where}"
                " ORDER BY seq, chain, run_id",
                args,
            ).fetchall()
        return [self._witness(r["run_id"], r["chain"], r["seq"], r["hash"]) for r in rows]

    def _witness(self, run_id: Any, chain: Any, seq: Any, digest: Any) -> AuditWitness:
        """A witness row as runbook wrote it, or ``StoreCorrupt``: a verify that reads it must
        say the store was edited, not fail on its types."""
        if type(seq) is not int or not all(type(v) is str for v in (run_id, chain, digest)):
            raise StoreCorrupt(
                f"{self.path}: run {run_id!r}: its audit_witness row of chain {chain!r} "
                f"holds seq {seq!r} and hash {digest!r}, not an integer and a hash; the row "
                "was not written by runbook"
            )
        return AuditWitness(run_id, chain, seq, digest)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._pid == os.getpid():
                self._checkpoints.close()  # before the connection: it may checkpoint the rest
                if self._conn is not None:
                    self._conn.close()
            self._conn = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"


# -- URLs and registration -----------------------------------------------------------------------


def open_url(
    url: str, *, timeout: float | str | None = None, durability: str = "power", **_: Any
) -> SqliteStore:
    """The ``sqlite`` provider: ``?timeout=SECONDS`` sets how long a writer waits for a lock;
    ``durability="process"`` commits with ``synchronous=NORMAL`` (docs/durable-runs.md)."""
    query = parse_qs(url.partition("?")[2], keep_blank_values=True)
    unknown = set(query) - {"timeout"}
    if unknown:
        raise UsageError(
            f"unknown sqlite:// URL option(s): {', '.join(sorted(unknown))} (known: timeout)"
        )
    raw = query["timeout"][-1] if "timeout" in query else timeout
    try:
        seconds = BUSY_TIMEOUT if raw is None else float(raw)
    except ValueError:
        raise UsageError(f"sqlite:// timeout must be a number of seconds, got {raw!r}") from None
    synchronous_for(durability)  # a bad value is a usage error before the file is touched
    return SqliteStore(path_from_url(url), url=url, timeout=seconds, durability=durability)


@hookimpl
def runbook_run_stores() -> list[Provider]:
    return [
        Provider(
            "sqlite",
            open_url,
            "SQLite file shared by processes: sqlite:///relative.db, sqlite:////abs.db",
        )
    ]
