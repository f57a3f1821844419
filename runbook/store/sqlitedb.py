"""SQLite plumbing shared by every runbook component that keeps state in the project's db file.

The run store, the sqlite audit sink and the sqlite lock provider share one file and open their own
connections through :func:`connect`, so they all get the same pragmas and error translation: a
corrupt file is a :class:`StoreCorrupt` naming it, never a raw ``sqlite3`` traceback. Each
component owns its tables and versions them with :func:`migrate`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote

from runbook.errors import StoreCorrupt, StoreError, UsageError

BUSY_TIMEOUT = 30.0  # seconds a writer waits for another process before giving up

Migration = Callable[[sqlite3.Connection], None]

# -- connections shared with other components ------------------------------------------------


# ``durability`` -> ``PRAGMA synchronous``. In WAL mode FULL syncs the WAL on every commit (a
# commit survives power loss); NORMAL syncs only at checkpoints: a commit survives the death of
# the process (kill -9: the WAL is in the OS page cache) but the last ones may be lost with power.
SYNCHRONOUS = {"power": "FULL", "process": "NORMAL"}


def synchronous_for(durability: str) -> str:
    """The pragma value for a ``durability`` setting; ``UsageError`` for anything else."""
    try:
        return SYNCHRONOUS[durability]
    except KeyError:
        raise UsageError(f"durability must be 'power' or 'process', got {durability!r}") from None


def connect(
    path: str | os.PathLike[str], *, timeout: float = BUSY_TIMEOUT, durability: str = "power"
) -> sqlite3.Connection:
    """Open ``path`` with runbook's pragmas: WAL, busy_timeout, synchronous (FULL unless
    ``durability="process"``: NORMAL), foreign keys.

    The connection is in autocommit mode (``isolation_level=None``): callers write ``BEGIN
    IMMEDIATE`` / ``COMMIT`` themselves, because Python's implicit transactions start too late to
    avoid SQLITE_BUSY on lock upgrades. Parent folders are created; a new file gets mode 0640. A
    file that is not a SQLite database raises :class:`StoreCorrupt` naming it; other failures
    raise :class:`StoreError`.
    """
    synchronous = synchronous_for(durability)
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Outputs and params live here: not world-readable. SQLite gives -wal/-shm the same mode.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise translate_error(exc, path, "open") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        _enable_wal(conn, timeout)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise translate_error(exc, path, "open") from exc
    return conn


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    # Switching a fresh file to WAL needs an exclusive lock and SQLite may report BUSY at once
    # (without calling the busy handler) when several processes open the file together.
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if _primary_code(exc) not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def translate_error(exc: sqlite3.Error, path: Path | str, action: str) -> StoreError:
    """One clear runbook error for a sqlite3 exception: corrupt file, busy, or anything else."""
    code = _primary_code(exc)
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return StoreCorrupt(f"{path} is not a usable SQLite database ({exc}); it was not modified")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(f"{path} stayed locked by another process; could not {action} ({exc})")
    return StoreError(f"could not {action} {path}: {exc}")


# -- schema versions -----------------------------------------------------------------------------


def migrate(
    conn: sqlite3.Connection,
    migrations: Sequence[Migration],
    *,
    path: Path | str,
    component: str | None = None,
) -> int:
    """Bring a schema to version ``len(migrations)``; ``migrations[n]`` turns version n into n+1.

    ``component=None`` is the run store, versioned in ``PRAGMA user_version``; other components
    sharing the file pass their name and are versioned in the ``runbook_schema`` table. Several
    processes may open a fresh file at once: the version is re-read under ``BEGIN IMMEDIATE`` so
    exactly one of them migrates. A version newer than this code knows is refused untouched.
    """
    target = len(migrations)
    label = "run store" if component is None else component
    try:
        version = _schema_version(conn, component)
        _refuse_newer(version, target, path, label)
        if version == target:
            return version
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _schema_version(conn, component)
            _refuse_newer(version, target, path, label)
            for number in range(version, target):
                migrations[number](conn)
            _set_schema_version(conn, component, target)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise translate_error(exc, path, f"migrate the {label} schema of") from exc
    return target


def _refuse_newer(version: int, target: int, path: Path | str, label: str) -> None:
    if version > target:
        raise StoreCorrupt(
            f"{path} has {label} schema version {version}, written by a newer runbook; this "
            f"runbook understands up to version {target}. Upgrade runbook to use this file "
            "(it was not modified)."
        )


def _schema_version(conn: sqlite3.Connection, component: str | None) -> int:
    if component is None:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runbook_schema'"
    ).fetchone()
    if table is None:
        return 0
    row = conn.execute(
        "SELECT version FROM runbook_schema WHERE component = ?", (component,)
    ).fetchone()
    return int(row[0]) if row else 0


def _set_schema_version(conn: sqlite3.Connection, component: str | None, version: int) -> None:
    if component is None:
        conn.execute(f"PRAGMA user_version = {int(version)}")
        return
    conn.execute(
        "CREATE TABLE IF NOT EXISTS runbook_schema "
        "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    conn.execute(
        "INSERT INTO runbook_schema (component, version) VALUES (?, ?) "
        "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        (component, version),
    )


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` (against the cwd) or ``sqlite:////absolute.db``, query removed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise UsageError(f"{url!r} is not a sqlite:// URL")
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/") or not rest.strip("/"):
        raise UsageError(
            f"{url!r} has no file path: write sqlite:///relative/path.db or sqlite:////abs/path.db"
        )
    return Path(unquote(rest[1:])).expanduser()
