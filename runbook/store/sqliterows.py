"""The run store's tables in SQLite: their migrations, and the codec between records and rows.

Kept apart from the store (``runbook.store.sqlite``) because it is pure: what a row of ``runs``,
``steps``, ``approvals`` or ``interrupt_decisions`` holds and how each record round-trips through
it, tested without a transaction. The step row is the one written on every transition, so it has
a positional encoder of its own (``step_row``), which must agree with the generic one.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from runbook.errors import StoreCorrupt, StoreError
from runbook.store.base import ApprovalRecord, InterruptDecision, RunRecord, StepRecord
from runbook.store.sqlitedb import Migration

R = TypeVar("R", RunRecord, StepRecord, ApprovalRecord, InterruptDecision)


def _v1_initial(conn: sqlite3.Connection) -> None:
    for statement in (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, runbook_path TEXT NOT NULL, runbook_sha256 TEXT NOT NULL,
            env TEXT NOT NULL, actor TEXT NOT NULL, status TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            host TEXT NOT NULL DEFAULT '', pid INTEGER NOT NULL DEFAULT 0,
            options TEXT NOT NULL DEFAULT '{}', error TEXT)""",
        "CREATE INDEX runs_by_created ON runs (created_at)",
        "CREATE INDEX runs_by_status ON runs (status, created_at)",
        """CREATE TABLE steps (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            name TEXT NOT NULL, status TEXT NOT NULL, output TEXT NOT NULL DEFAULT 'null',
            error TEXT, attempts INTEGER NOT NULL DEFAULT 0, started_at TEXT, finished_at TEXT,
            duration REAL, reason TEXT, completed_seq INTEGER, PRIMARY KEY (run_id, name))""",
        """CREATE TABLE approvals (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            step TEXT NOT NULL, actor TEXT NOT NULL, decision TEXT NOT NULL,
            comment TEXT NOT NULL DEFAULT '', at TEXT, auto INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX approvals_by_run ON approvals (run_id, id)",
        """CREATE TABLE interrupt_decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            step TEXT NOT NULL, choice TEXT NOT NULL, actor TEXT NOT NULL, at TEXT)""",
        "CREATE INDEX interrupt_decisions_by_run ON interrupt_decisions (run_id, id)",
    ):
        conn.execute(statement)


def _v2_audit_witness(conn: sqlite3.Connection) -> None:
    # No foreign key to runs: the witness must outlive a deleted run row, as the evidence does.
    conn.execute(
        """CREATE TABLE audit_witness (
            run_id TEXT NOT NULL, chain TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
            PRIMARY KEY (run_id, chain))"""
    )


def _v3_approval_data(conn: sqlite3.Connection) -> None:
    """Plan hash and signature of each decision (DESIGN 11)."""
    conn.execute("ALTER TABLE approvals ADD COLUMN data TEXT NOT NULL DEFAULT '{}'")


def _v4_step_rollback(conn: sqlite3.Connection) -> None:
    # The outcome of a step's own rollback ("running" while it runs), so resume can finish it.
    conn.execute("ALTER TABLE steps ADD COLUMN rollback TEXT")


# Append only: a released runbook may have written any prefix of this list into a user's file.
MIGRATIONS: list[Migration] = [_v1_initial, _v2_audit_witness, _v3_approval_data, _v4_step_rollback]


# -- encoding ------------------------------------------------------------------------------------

TABLES = {
    RunRecord: "runs",
    StepRecord: "steps",
    ApprovalRecord: "approvals",
    InterruptDecision: "interrupt_decisions",
}
# ``json.dumps(value, ensure_ascii=False)``, the same text, without building an encoder per call
# (a third of its cost for a small output); the encoder keeps no state between calls.
dumps = json.JSONEncoder(ensure_ascii=False).encode
_JSON = frozenset({"params", "options", "output", "data"})
_DATES = frozenset({"created_at", "updated_at", "started_at", "finished_at", "at"})


def encode(record: Any, what: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if f.name in _JSON:
            try:
                value = dumps(value)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"{what}: {f.name} is not JSON-serialisable ({exc})") from None
        elif f.name in _DATES and value is not None:
            value = utc(value).isoformat(timespec="microseconds")
        elif isinstance(value, bool):
            value = int(value)
        row[f.name] = value
    return row


def decode(cls: type[R], row: sqlite3.Row, path: Path, what: str) -> R:
    values: dict[str, Any] = {}
    for f in fields(cls):
        raw = row[f.name]
        try:
            if f.name in _JSON:
                value = json.loads(raw)
                if f.name != "output" and not isinstance(value, dict):
                    raise StoreCorrupt(
                        f"{path}: {what}: column {TABLES[cls]}.{f.name} is not a JSON object; "
                        "the row was not written by runbook"
                    )
            elif f.name in _DATES:
                value = None if raw is None else utc(datetime.fromisoformat(raw))
            elif f.name == "auto":
                value = bool(raw)
            else:
                value = raw
        except (TypeError, ValueError) as exc:
            kind = "valid JSON" if f.name in _JSON else "a valid ISO-8601 datetime"
            raise StoreCorrupt(
                f"{path}: {what}: column {TABLES[cls]}.{f.name} is not {kind} "
                f"({type(exc).__name__}); the row was not written by runbook"
            ) from None
        values[f.name] = value
    return cls(**values)


def utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC: runbook itself only ever produces UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def insert_sql(table: str, row: dict[str, Any]) -> str:
    return f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"


# A step row is the one record written on every transition: encoded positionally, without the
# per-field dispatch of ``encode`` (which it must match: test_store_sqlite checks both agree).
STEP_COLUMNS = tuple(f.name for f in fields(StepRecord))
_UPSERT_SET = " ON CONFLICT (run_id, name) DO UPDATE SET " + ", ".join(
    f"{k} = excluded.{k}" for k in STEP_COLUMNS if k not in ("run_id", "name")
)
UPSERT_STEP = (
    f"INSERT INTO steps ({', '.join(STEP_COLUMNS)}) VALUES ({', '.join('?' * len(STEP_COLUMNS))})"
    + _UPSERT_SET
)
# The same upsert, written only while the run's row exists (``?1`` is the run_id column): the
# check of a one-run transition inside its statement, where a SELECT of its own cost a third of
# the statement's time. It writes no row when the run is gone, which its change count tells.
UPSERT_STEP_OF_RUN = (
    f"INSERT INTO steps ({', '.join(STEP_COLUMNS)})"
    f" SELECT {', '.join(f'?{i}' for i in range(1, len(STEP_COLUMNS) + 1))}"
    " WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1)" + _UPSERT_SET
)


# A run's last audit event in one chain, kept unless an older one (a lower seq) comes late.
WITNESS = (
    "INSERT INTO audit_witness (run_id, chain, seq, hash) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (run_id, chain) DO UPDATE SET seq = excluded.seq,"
    " hash = excluded.hash WHERE excluded.seq > audit_witness.seq"
)


def step_row(step: StepRecord) -> tuple[Any, ...]:
    output = step.output
    if output is None:
        text = "null"
    else:
        try:
            text = dumps(output)
        except (TypeError, ValueError) as exc:
            what = f"step {step.name!r} of run {step.run_id!r}"
            raise StoreError(f"{what}: output is not JSON-serialisable ({exc})") from None
    return (
        step.run_id,
        step.name,
        step.status,
        text,
        step.error,
        step.attempts,
        stored_date(step.started_at),
        stored_date(step.finished_at),
        step.duration,
        step.reason,
        step.completed_seq,
        step.rollback,
    )


def stored_date(value: datetime | None) -> str | None:
    """The stored text of a datetime. The last one is remembered: a step's ``started_at`` is
    written twice, in its start's row and in its outcome's (the next transition's first date)."""
    global _last_date
    if value is None:
        return None
    last = _last_date
    if last[0] is value:  # datetimes are immutable: the same object, the same text
        return last[1]
    text = (value if value.tzinfo is UTC else utc(value)).isoformat(timespec="microseconds")
    _last_date = (value, text)
    return text


_last_date: tuple[datetime | None, str] = (None, "")
