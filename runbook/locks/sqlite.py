"""``sqlite:///path.db``: locks in a SQLite database, usually the run store's own file.

Every operation is one short ``BEGIN IMMEDIATE`` transaction (the database's write lock, taken up
front so two processes cannot both read "free" and both insert), with a busy timeout so contention
waits milliseconds instead of failing. Only the tables ``locks`` (live and expired leases) and
``lock_tokens`` (the last fencing token per name, kept after release so tokens never go back) are
touched (plus this component's row in ``runbook_schema``, the shared schema-version table), so
the file can be shared with the run store. Connections come from ``runbook.store.sqlitedb`` so
every component of the file gets the same pragmas (WAL, ``synchronous=FULL``, or NORMAL under
``durability = "process"``): a fencing token is durable before the lease is handed out.

Paths follow the SQLAlchemy convention: ``sqlite:///.runbook/runbook.db`` is relative to the cwd,
``sqlite:////var/lib/runbook.db`` is absolute; a bare ``sqlite://`` means the default run store
file ``.runbook/runbook.db``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from runbook.errors import LeaseLost, LockError, StoreError
from runbook.locks.base import Lease
from runbook.locks.file import lost_message
from runbook.store.sqlitedb import connect, migrate
from runbook.store.sqlitedb import path_from_url as store_path_from_url

DEFAULT_PATH = ".runbook/runbook.db"


_V1 = (
    """CREATE TABLE IF NOT EXISTS locks (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        actor TEXT NOT NULL,
        token INTEGER NOT NULL,
        acquired_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS lock_tokens (
        name TEXT PRIMARY KEY,
        token INTEGER NOT NULL
    )""",
)


def _v1_initial(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


MIGRATIONS = [_v1_initial]
_COLUMNS = "name, owner, actor, token, acquired_at, expires_at"


def path_from_url(url: str) -> str:
    """The run store's URL convention; bare ``sqlite://`` is the default store file."""
    rest = url.split("://", 1)[1] if "://" in url else url
    if not rest.split("?", 1)[0]:
        return DEFAULT_PATH
    return str(store_path_from_url(url))


class SqliteLocks:
    def __init__(
        self,
        path: str,
        *,
        url: str | None = None,
        now: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        durability: str = "power",
    ) -> None:
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self._now = now
        self._mutex = threading.Lock()  # one connection, shared by the manager's worker threads
        try:
            self._conn = connect(path, timeout=busy_timeout, durability=durability)
        except StoreError as exc:
            raise LockError(f"cannot open lock database: {exc}") from None
        try:
            migrate(self._conn, MIGRATIONS, path=path, component="locks")
        except StoreError as exc:
            self._conn.close()
            raise LockError(f"cannot open lock database: {exc}") from None

    @classmethod
    def open(cls, url: str, *, durability: str = "power", **_: Any) -> SqliteLocks:
        """``durability``: as the run store's (``"process"``: ``synchronous=NORMAL``)."""
        return cls(path_from_url(url), url=url, durability=durability)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise LockError(f"lock database {self.path}: {exc}") from None
            try:
                yield self._conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise LockError(f"lock database {self.path}: {exc}") from None

    def _row(self, conn: sqlite3.Connection, name: str) -> Lease | None:
        row = conn.execute(f"SELECT {_COLUMNS} FROM locks WHERE name = ?", (name,)).fetchone()
        return _lease(row) if row else None

    # -- provider protocol ------------------------------------------------------------------

    def acquire(self, name: str, owner: str, *, actor: str, lease: float) -> Lease | None:
        with self._errors(), self._tx() as conn:
            now = self._now()
            current = self._row(conn, name)
            if current is not None and current.expires_at > now:
                if current.owner != owner:
                    return None
                renewed = current.evolve(expires_at=now + lease)
                conn.execute(
                    "UPDATE locks SET expires_at = ? WHERE name = ?", (renewed.expires_at, name)
                )
                return renewed
            row = conn.execute("SELECT token FROM lock_tokens WHERE name = ?", (name,)).fetchone()
            last = max(row[0] if row else 0, current.token if current else 0)
            new = Lease(
                name=name,
                owner=owner,
                token=last + 1,
                actor=actor,
                acquired_at=now,
                expires_at=now + lease,
            )
            conn.execute(
                "INSERT INTO lock_tokens (name, token) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET token = excluded.token",
                (name, new.token),
            )
            conn.execute(
                f"INSERT OR REPLACE INTO locks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (name, owner, actor, new.token, new.acquired_at, new.expires_at),
            )
            return new

    def renew(self, lease: Lease, seconds: float) -> Lease:
        with self._errors(), self._tx() as conn:
            now = self._now()
            current = self._row(conn, lease.name)
            if current is not None and current.expires_at <= now:
                current = None
            if current is None or current.owner != lease.owner or current.token != lease.token:
                raise LeaseLost(lost_message(lease, current))
            renewed = current.evolve(expires_at=now + seconds)
            conn.execute(
                "UPDATE locks SET expires_at = ? WHERE name = ?", (renewed.expires_at, lease.name)
            )
            return renewed

    def release(self, lease: Lease) -> None:
        with self._errors(), self._tx() as conn:
            conn.execute(
                "DELETE FROM locks WHERE name = ? AND owner = ? AND token = ?",
                (lease.name, lease.owner, lease.token),
            )

    def holder(self, name: str) -> Lease | None:
        with self._errors(), self._mutex:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM locks WHERE name = ? AND expires_at > ?",
                (name, self._now()),
            ).fetchone()
        return _lease(row) if row else None

    def held(self) -> list[Lease]:
        with self._errors(), self._mutex:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM locks WHERE expires_at > ? ORDER BY name",
                (self._now(),),
            ).fetchall()
        return [_lease(row) for row in rows]

    def close(self) -> None:
        with self._mutex:
            self._conn.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise LockError(f"lock database {self.path}: {exc}") from None


def _lease(row: tuple[Any, ...]) -> Lease:
    name, owner, actor, token, acquired_at, expires_at = row
    return Lease(
        name=name,
        owner=owner,
        token=int(token),
        actor=actor,
        acquired_at=float(acquired_at),
        expires_at=float(expires_at),
    )
