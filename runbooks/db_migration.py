"""Schema migration of a SQLite database: analyze, back up, migrate behind an approval, verify.

The shape is the one to keep for any database: look first (a probe, so ``--dry-run`` shows the
real pending migrations), take a verified backup, apply every pending migration in ONE
transaction behind a human gate, verify the result, and restore the backup if anything after
the migration fails. Cleanup is ``required=False``: a failed prune must not undo a good migration.

Try it (the database lives under ``.runbook/`` of the current directory)::

    runbook exec runbooks/db_migration.py --dry-run     # what would be applied
    runbook exec runbooks/db_migration.py               # pauses at `migrate`, exit 3
    runbook approve <run_id> --step migrate --comment "reviewed"
    runbook resume <run_id>
    runbook exec runbooks/db_migration.py -p target=2 --yes   # approve as yourself (not in strict)

In a test, replace the ``migrations`` resource to try a migration without touching this file::

    Runner(resources={"migrations": [*MIGRATIONS, broken]}, ...).run("runbooks/db_migration.py")
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runbook import param, probe, resource, rollback, step


@dataclass(frozen=True)
class Migration:
    """One schema version. ``check`` asserts the result, so ``verify`` tests what was meant."""

    version: int
    description: str
    sql: str
    check: Callable[[sqlite3.Connection], object] | None = None


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


MIGRATIONS = [
    Migration(
        1,
        "customers table",
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        INSERT INTO customers (name) VALUES ('Ada'), ('Grace'), ('Linus');
        """,
        check=lambda c: _columns(c, "customers") >= {"id", "name"},
    ),
    Migration(
        2,
        "customers.email",
        "ALTER TABLE customers ADD COLUMN email TEXT;",
        check=lambda c: "email" in _columns(c, "customers"),
    ),
    Migration(
        3,
        "orders table",
        """
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customers(id),
            total_cents INTEGER NOT NULL CHECK (total_cents >= 0)
        );
        CREATE INDEX orders_by_customer ON orders (customer_id);
        """,
        check=lambda c: "customer_id" in _columns(c, "orders"),
    ),
]
LATEST = MIGRATIONS[-1].version

database = param("database", default=".runbook/demo.db", help="SQLite file (relative to cwd)")
target = param("target", type=int, default=LATEST, help="schema version to migrate to")
keep_backups = param("keep_backups", type=int, default=3, help="backups kept by cleanup")


@resource(name="database")
def database_path(params) -> Path:
    return Path(params.database).resolve()


@resource(fake=lambda: MIGRATIONS)  # pure data: the same list in tests
def migrations() -> list[Migration]:
    return MIGRATIONS


@contextmanager
def _connect(path: Path, *, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so DDL runs inside our transaction.
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def _statements(sql: str) -> Iterator[str]:
    """Split a script into statements. (``executescript`` would COMMIT our transaction first.)"""
    buffer = ""
    for part in sql.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):  # false while a ';' sits inside a string
            if buffer.strip(" \n\t;"):
                yield buffer.strip()
            buffer = ""


def _row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in sorted(tables)}


@probe
def analyze(database, migrations, params):
    """Read-only look at the database: schema version, row counts, integrity, what is pending."""
    if not database.exists():
        version, rows, integrity = 0, {}, "ok"
    else:
        with _connect(database, readonly=True) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            rows = _row_counts(conn)
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        raise RuntimeError(f"{database} fails its integrity check: {integrity}")
    if params.target < version:
        raise ValueError(
            f"target {params.target} is below the current schema version {version}; "
            "this runbook does not downgrade"
        )
    pending = [m.version for m in migrations if version < m.version <= params.target]
    return {"exists": database.exists(), "version": version, "rows": rows, "pending": pending}


@step(when=lambda analyze: bool(analyze["pending"]))
def backup(analyze, database, ctx):
    """A consistent copy through SQLite's online backup API, checked before we rely on it."""
    if not analyze["exists"]:
        return {"path": None, "version": 0}  # nothing to keep: the rollback deletes the new file
    path = database.with_name(f"{database.name}.{ctx.run_id}.backup")
    with _connect(database, readonly=True) as src, _connect(path) as dst:
        src.backup(dst)
        if dst.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise RuntimeError(f"backup {path} failed its integrity check")
    return {"path": str(path), "version": analyze["version"], "bytes": path.stat().st_size}


@step(approval=True, lock="db-migration-{env}", reversible=True)
def migrate(analyze, backup, database, migrations, ctx):
    """All pending migrations in one transaction: SQLite DDL is transactional, so a failure here
    leaves the database untouched and there is nothing to roll back."""
    pending = [m for m in migrations if m.version in analyze["pending"]]
    database.parent.mkdir(parents=True, exist_ok=True)
    with _connect(database) as conn:
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
        try:
            for m in pending:
                for statement in _statements(m.sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {m.version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    after = pending[-1].version
    ctx.record_change(f"sqlite:{database.name}", before=analyze["version"], after=after)
    return {"from": analyze["version"], "to": after, "applied": [m.description for m in pending]}


@rollback(migrate)
def restore_backup(backup, database):
    """Put the backup back with the backup API (atomic for other connections)."""
    if backup["path"] is None:
        database.unlink(missing_ok=True)  # the database did not exist before this run
        return
    with _connect(Path(backup["path"]), readonly=True) as src, _connect(database) as dst:
        src.backup(dst)


@step
def verify(migrate, analyze, database, migrations):
    """Check what each migration promised, the version, integrity, and that no rows vanished."""
    with _connect(database, readonly=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "integrity check"
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == migrate["to"], f"schema version {version}, expected {migrate['to']}"
        for m in migrations:
            if m.version <= version and m.check is not None:
                assert m.check(conn), f"migration {m.version} ({m.description}) check failed"
        rows = _row_counts(conn)
    lost = {t: (n, rows.get(t, 0)) for t, n in analyze["rows"].items() if rows.get(t, 0) < n}
    assert not lost, f"rows lost (before, after): {lost}"
    return {"version": version, "rows": rows}


@step(after=[verify], required=False)
def cleanup(backup, database, params):
    """Keep the newest ``keep_backups`` backups. Not required: it never fails the run."""
    backups = sorted(
        database.parent.glob(f"{database.name}.*.backup"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    removed = []
    for old in backups[max(params.keep_backups, 1) :]:
        if str(old) != backup["path"]:
            old.unlink()
            removed.append(old.name)
    with _connect(database) as conn:
        conn.execute("PRAGMA optimize")
    return {"removed": removed}


# `pytest --runbooks runbooks/` runs this file against a database in the test's tmp_path.
TEST = {"resources": {"database": lambda tmp: tmp / "demo.db"}}
