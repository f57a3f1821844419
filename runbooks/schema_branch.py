"""Branch on live state: migrate a SQLite schema only when it is behind, and stop when unsure.

::

    schema (probe: healthy + version, or ambiguous)
      -> known_schema (probe: stops the run on ambiguous)
      -> backup, migrate   (when= the schema is behind; skipped when current)
      -> verify

Reading infrastructure state has three answers, not two. "Version 1" and "version 3" are
decisions; "the table is missing but other tables exist", "two rows in schema_version", "the
database is locked" are not, and guessing either way is how a migration runs twice or never.
``schema`` reports what it saw as a ``ProbeResult``; ``known_schema`` turns ``ambiguous`` into a
failed run before anything changes. Both are probes, so ``--dry-run`` reads the real database and
shows whether ``migrate`` would run or be skipped.

Try it::

    runbook exec runbooks/schema_branch.py --dry-run   # behind: backup and migrate would run
    runbook exec runbooks/schema_branch.py             # migrates .runbook/schema-demo.db to 3
    runbook exec runbooks/schema_branch.py             # current: backup and migrate skipped
    sqlite3 .runbook/schema-demo.db "INSERT INTO schema_version VALUES (9)"
    runbook exec runbooks/schema_branch.py             # ambiguous: fails, changes nothing
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from runbook import param, probe, resource, rollback, step
from runbook.probes import Outcome, ProbeResult

# version -> the SQL that brings the schema from version-1 to version.
MIGRATIONS = {
    1: ["CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)"],
    2: ["ALTER TABLE accounts ADD COLUMN created_at TEXT"],
    3: ["CREATE INDEX accounts_by_created ON accounts (created_at)"],
}
TARGET = max(MIGRATIONS)

database = param("database", default=".runbook/schema-demo.db", help="SQLite file")

lock = "schema-{env}"


class SchemaDB:
    """The database, behind the three operations the runbook needs. Replace it in a test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_version(self) -> ProbeResult:
        """Read-only: a missing file is version 0, never created here (``--dry-run`` safe)."""
        if not self.path.exists():
            return ProbeResult(Outcome.HEALTHY, "no database yet", 0)
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                if "schema_version" not in tables:
                    if tables:
                        return ProbeResult(
                            Outcome.AMBIGUOUS, f"tables {sorted(tables)} but no schema_version"
                        )
                    return ProbeResult(Outcome.HEALTHY, "empty database", 0)
                rows = conn.execute("SELECT version FROM schema_version").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:  # locked, corrupt, not a database
            return ProbeResult(Outcome.AMBIGUOUS, f"cannot read {self.path}: {exc}")
        if len(rows) != 1 or not isinstance(rows[0][0], int):
            return ProbeResult(Outcome.AMBIGUOUS, f"schema_version holds {rows!r}, not one int")
        version = rows[0][0]
        if not 0 <= version <= TARGET:
            return ProbeResult(
                Outcome.AMBIGUOUS, f"version {version} is not one this runbook knows (0-{TARGET})"
            )
        return ProbeResult(Outcome.HEALTHY, f"version {version}", version)

    def backup(self, name: str) -> Path | None:
        if not self.path.exists():
            return None
        target = self.path.with_name(f"{self.path.name}.{name}.bak")
        with sqlite3.connect(self.path) as src, sqlite3.connect(target) as dst:
            src.backup(dst)  # consistent even while other connections write
        return target

    def restore(self, backup: Path | None) -> None:
        if backup is None:  # there was no database before: remove what the migration created
            self.path.unlink(missing_ok=True)
        else:
            shutil.copyfile(backup, self.path)

    def migrate(self, current: int, target: int) -> list[int]:
        """Apply every pending migration in ONE transaction: all of them or none."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
                applied = list(range(current + 1, target + 1))
                for version in applied:
                    for statement in MIGRATIONS[version]:
                        conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version VALUES (?)", (target,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        return applied


@resource
def schema_db(params) -> SchemaDB:
    return SchemaDB(Path(params.database).resolve())


@probe
def schema(schema_db):
    """What the database says, as healthy (with the version) or ambiguous (with why)."""
    return schema_db.read_version()


@probe
def known_schema(schema):
    """Stop rather than guess: ``decisive()`` raises ``Ambiguous``, which fails the run here,
    before any step that changes something has started."""
    schema.decisive()
    return {"current": schema.value, "target": TARGET}


def behind(known_schema) -> bool:
    return known_schema["current"] < TARGET


@step(when=behind, reversible=True)
def backup(known_schema, schema_db, ctx):
    path = schema_db.backup(ctx.run_id)
    return {"path": str(path) if path else None, "version": known_schema["current"]}


@rollback(backup)
def restore(backup, schema_db):
    if backup is None:  # the backup itself failed: the schema was not touched yet
        return
    schema_db.restore(Path(backup["path"]) if backup["path"] else None)


@step(when=behind)
def migrate(known_schema, backup, schema_db, ctx):
    """Skipped when current. A failure here changes nothing (one transaction); a failure after
    it restores the backup."""
    applied = schema_db.migrate(known_schema["current"], TARGET)
    ctx.record_change("schema", known_schema["current"], TARGET)
    return {"applied": applied}


@step(after=[migrate])
def verify(schema_db):
    """Runs on both branches: the database must now be decisively at TARGET."""
    result = schema_db.read_version().decisive()
    assert result.value == TARGET, f"schema is at {result.value}, expected {TARGET}"
    return {"version": result.value}


TEST = {"resources": {"schema_db": lambda tmp: SchemaDB(tmp / "schema.db")}}
