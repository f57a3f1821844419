"""``sqlite://``: the audit trail as a table in the run store's database, queryable with SQL.

``sqlite:///rel/path.db`` is relative to the working directory, ``sqlite:////abs/path.db`` absolute
(SQLAlchemy's convention, as the run store's URLs); bare ``sqlite://`` is the default run store file
``.runbook/runbook.db``. The table is ``audit_events``; the run store's own tables live beside it.

Each row keeps the event's canonical JSON (the bytes the hash was computed over) next to copies
of ``run_id``, ``step``, ``kind``, ``actor`` and ``at`` (``run_id`` and ``at`` indexed: see
``_SCHEMA``). Queries filter on the columns;
``verify`` trusts only the JSON and also checks every column against it, so an ``UPDATE`` of any
column, a ``DELETE``, an ``INSERT`` or rows swapped are all reported.

An append runs in a ``BEGIN IMMEDIATE`` transaction (the write lock is taken before the last row
is read), so processes sharing the file chain one after the other; ``synchronous=FULL`` makes the
event durable when ``append`` returns (``durability = "process"``: ``NORMAL``, durable against a
killed process, not against power loss).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runbook.audit.events import GENESIS, AuditEvent, chain_after, event_hash, parse_event
from runbook.audit.query import AuditQuery, format_utc, normalize_at
from runbook.audit.verify import BadEvent, Check, VerifyReport, verify_chain
from runbook.errors import AuditError
from runbook.store.sqlitedb import synchronous_for
from runbook.urls import redact_url

DEFAULT_DB = ".runbook/runbook.db"
BUSY_TIMEOUT = 30.0  # seconds another process may hold the write lock before append fails

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    seq       INTEGER PRIMARY KEY,
    run_id    TEXT NOT NULL,
    step      TEXT,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    at        TEXT,            -- UTC, fixed width: text order is time order
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    event     TEXT NOT NULL    -- canonical JSON: the bytes the hash covers
);
CREATE INDEX IF NOT EXISTS audit_events_run_id ON audit_events (run_id);
CREATE INDEX IF NOT EXISTS audit_events_at ON audit_events (at);
"""
# No index on kind or actor (files made before 2026-12 have them, kept and still used): every
# event is inserted into every index, in the commit that every transition waits for, and those
# two made it touch two more pages (a chain step's commit: 8.2 WAL frames with them, 6.4 without;
# a FULL commit on a 20,000-event trail 5-15% faster). A query by kind or actor within a run
# goes through the run's index; across all runs it scans the trail, which forensics can afford.

_COLUMNS = ("run_id", "step", "kind", "actor", "at", "prev_hash", "hash")


def _truthy(value: object) -> bool:
    return str(value).lower() in {"1", "true", "yes", "on"}


def sqlite_path(url: str) -> str:
    """The database file named by a ``sqlite://`` URL (see the module docstring)."""
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if not rest:
        return DEFAULT_DB
    return rest[1:] if rest.startswith("/") else rest


class SqliteSink:
    """The ``audit_events`` table of a SQLite file; see the module docstring."""

    queryable = True

    def __init__(
        self, url: str, path: str, *, best_effort: bool = False, durability: str = "power"
    ) -> None:
        self.url = url
        self.path = path
        self.best_effort = best_effort
        self.synchronous = synchronous_for(durability)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, url: str, best_effort: bool = False, durability: str = "power", **_options: Any
    ) -> SqliteSink:
        path = sqlite_path(url)
        if path == ":memory:":
            raise AuditError(
                f"audit sink {url}: an in-memory database is private to one "
                "connection; use memory:// for an in-process trail"
            )
        return cls(url, path, best_effort=_truthy(best_effort), durability=durability)

    def _error(self, action: str, exc: BaseException) -> AuditError:
        shown = redact_url(self.url)
        return AuditError(f"audit sink {shown} {action}: {type(exc).__name__}: {exc}")

    def _connect(self) -> sqlite3.Connection:
        """The writer connection, creating the database and the table on first use."""
        if self._conn is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            try:
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                except sqlite3.OperationalError:
                    pass  # another connection is mid-transaction; the file keeps its journal mode
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _reader(self) -> sqlite3.Connection | None:
        """A read-only connection of its own, so a long listing streams rows without blocking
        appends (WAL gives it a consistent snapshot) and never creates the database."""
        if not Path(self.path).exists():
            return None
        uri = f"file:{quote(str(Path(self.path).resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, check_same_thread=False)
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'"
        ).fetchone()
        if row is None:
            conn.close()
            return None
        return conn

    # -- writing ------------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> AuditEvent:
        return self.append_many([event])[0]

    def append_many(
        self, events: Sequence[AuditEvent], conn: sqlite3.Connection | None = None
    ) -> list[AuditEvent]:
        """Chain and insert ``events`` in one transaction: one commit for all of them.

        ``conn``: a connection to this same file already inside a write transaction (the run
        store's, ``SqliteStore.transaction``): the rows join that transaction and its one commit,
        so a step's state and its audit events become durable together or not at all. Call
        ``prepare`` first, outside that transaction.
        """
        if conn is not None:
            try:
                return self._insert(conn, events)
            except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
                raise self._error("failed", exc) from exc
        with self._lock:
            try:
                conn = self._connect()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    stored = self._insert(conn, events)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return stored
            except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
                raise self._error("failed", exc) from exc

    def prepare(self) -> None:
        """Create the database and the table now (before joining another transaction)."""
        with self._lock:
            try:
                self._connect()
            except (sqlite3.Error, OSError) as exc:
                raise self._error("failed", exc) from exc

    def _insert(self, conn: sqlite3.Connection, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        """Inside a write transaction: the last row read under the write lock, then the rows."""
        last = conn.execute(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, prev = (last[0], last[1]) if last else (0, GENESIS)
        stored = chain_after(seq, prev, events)
        rows = [
            (
                e.seq,
                e.run_id,
                e.step,
                e.kind,
                e.actor,
                normalize_at(e.at),
                e.prev_hash,
                e.hash,
                e.stored_line(),
            )
            for e in stored
        ]
        conn.executemany(
            "INSERT INTO audit_events (seq, run_id, step, kind, actor, at, prev_hash,"
            " hash, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return stored

    def shares_file_with(self, store: Any) -> bool:
        """True when ``store`` is a SQLite run store in this very file (its transactions can
        carry this sink's rows)."""
        path = getattr(store, "path", None)
        if path is None or not callable(getattr(store, "transaction", None)):
            return False
        try:
            return Path(path).resolve() == Path(self.path).resolve()
        except OSError:
            return False

    # -- reading ------------------------------------------------------------------------------

    def events(self, query: AuditQuery | None = None) -> Iterator[AuditEvent]:
        """Filtered by SQL on the indexed columns, in chain order; the JSON is what is returned."""
        sql, args = select_sql(query or AuditQuery())
        try:
            conn = self._reader()
            if conn is None:
                return
            with closing(conn):
                for (text,) in conn.execute(sql, args):
                    try:
                        yield parse_event(text)
                    except ValueError as exc:
                        raise AuditError(
                            f"audit sink {redact_url(self.url)} holds a row that is not an audit "
                            f"event ({exc}); run `runbook audit verify`"
                        ) from None
        except sqlite3.Error as exc:
            raise self._error("cannot be read", exc) from exc

    def head(self) -> AuditEvent | None:
        """The last event: one indexed row."""
        try:
            conn = self._reader()
            if conn is None:
                return None
            with closing(conn):
                row = conn.execute(
                    "SELECT event FROM audit_events ORDER BY seq DESC LIMIT 1"
                ).fetchone()
        except sqlite3.Error as exc:
            raise self._error("cannot be read", exc) from exc
        if row is None:
            return None
        try:
            return parse_event(row[0])
        except ValueError as exc:
            raise AuditError(
                f"audit sink {redact_url(self.url)}: the last row is not an audit event ({exc}); "
                "run `runbook audit verify`"
            ) from None

    @property
    def chain_id(self) -> str:
        """The database file, by its real path (symlinks and ``..`` resolved): what the run
        store's witness is keyed on, so the same file reached another way is checked against it."""
        return f"sqlite://{Path(self.path).resolve()}"

    def missing(self) -> str | None:
        """Why the trail has no events at all, when the reason is that it is gone."""
        if not Path(self.path).exists():
            return f"the database {self.path} does not exist"
        try:
            conn = self._reader()
        except sqlite3.Error:
            return None
        if conn is None:
            return f"the database {self.path} has no audit_events table"
        conn.close()
        return None

    def verify(self, checks: Sequence[Check] = ()) -> VerifyReport:
        try:
            conn = self._reader()
            if conn is None:
                return verify_chain((), checks)
            with closing(conn):
                return verify_rows(
                    conn.execute(
                        f"SELECT seq, {', '.join(_COLUMNS)}, event FROM audit_events ORDER BY seq"
                    ),
                    checks,
                )
        except sqlite3.Error as exc:
            raise self._error("cannot be read", exc) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"SqliteSink({self.url!r})"


def select_sql(query: AuditQuery) -> tuple[str, list[Any]]:
    """The SELECT serving a query: filters are WHERE clauses (run_id and at indexed)."""
    where: list[str] = []
    args: list[Any] = []
    for column in ("run_id", "step", "kind", "actor"):
        value = getattr(query, column)
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if query.since is not None:
        where.append("at >= ?")
        args.append(format_utc(query.since))
    if query.until is not None:
        where.append("at <= ?")
        args.append(format_utc(query.until))
    sql = "SELECT event FROM audit_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    # A time range on a trail sorted by seq: left alone, SQLite scans the whole table in rowid
    # order to skip the sort. ``+seq`` tells it to use the ``at`` index and sort the few matches.
    timed = query.since is not None or query.until is not None
    sql += " ORDER BY +seq" if timed else " ORDER BY seq"
    if query.limit:
        sql += " LIMIT ?"
        args.append(int(query.limit))
    return sql, args


def verify_rows(rows: Any, checks: Sequence[Check] = ()) -> VerifyReport:
    """The chain over the stored JSON, plus every indexed column checked against that JSON."""

    def stream() -> Iterator[AuditEvent]:
        for row in rows:
            seq, text = row[0], row[-1]
            try:
                event = parse_event(text)
            except ValueError as exc:
                raise BadEvent(seq, f"row {seq} is not an audit event: {exc}") from None
            if event.hash != event_hash(event):
                yield event  # verify_chain names it as edited
                return
            if event.seq != seq:
                raise BadEvent(
                    seq,
                    f"row {seq} holds the event hashed as seq {event.seq}: rows were "
                    "renumbered, swapped or inserted",
                )
            stored = dict(zip(_COLUMNS, row[1:-1], strict=True))
            expected = {c: getattr(event, c) for c in _COLUMNS}
            expected["at"] = normalize_at(event.at)
            for column in _COLUMNS:
                if stored[column] != expected[column]:
                    raise BadEvent(
                        seq,
                        f"event {seq} ({event.kind}) was edited: column {column} is "
                        f"{stored[column]!r} but the hashed event says {expected[column]!r}",
                    )
            yield event

    return verify_chain(stream(), checks)
