"""``postgresql://``: the run store shared by every host of a team.

Same semantics as the built-in stores: one transaction per method, outputs/params/options as JSONB,
times as ``timestamptz`` (returned as UTC). ``transaction()`` groups several methods into one
commit, and lends its connection to the ``postgresql://`` audit sink of the same database, as
``SqliteStore.transaction`` does for the sqlite sink: a transition's rows, events and witness
become durable together (docs/durable-runs.md). A row that is not what runbook wrote raises
``StoreCorrupt`` naming the run and the column instead of handing the engine a half-read record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from runbook.errors import RunNotFound, StoreCorrupt, StoreError
from runbook.store.base import (
    ApprovalRecord,
    AuditWitness,
    InterruptDecision,
    RunRecord,
    StepRecord,
)
from runbook_postgres._db import Database, PgTarget, ensure_version, schema_sql

MIGRATIONS: list[LiteralString] = [
    # 1: initial layout. ``seq`` columns keep insertion order for ties and for approvals.
    """
    CREATE TABLE {s}.runs (
        seq bigserial UNIQUE,
        run_id text PRIMARY KEY,
        runbook_path text NOT NULL,
        runbook_sha256 text NOT NULL,
        env text NOT NULL,
        actor text NOT NULL,
        status text NOT NULL,
        params jsonb NOT NULL DEFAULT '{{}}',
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        host text NOT NULL DEFAULT '',
        pid integer NOT NULL DEFAULT 0,
        options jsonb NOT NULL DEFAULT '{{}}',
        error text
    );
    CREATE INDEX runs_created ON {s}.runs (created_at DESC, seq DESC);
    CREATE INDEX runs_status_created ON {s}.runs (status, created_at DESC, seq DESC);
    CREATE TABLE {s}.steps (
        run_id text NOT NULL,
        name text NOT NULL,
        status text NOT NULL,
        output jsonb,
        error text,
        attempts integer NOT NULL DEFAULT 0,
        started_at timestamptz,
        finished_at timestamptz,
        duration double precision,
        reason text,
        completed_seq integer,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE {s}.approvals (
        seq bigserial PRIMARY KEY,
        run_id text NOT NULL,
        step text NOT NULL,
        actor text NOT NULL,
        decision text NOT NULL,
        comment text NOT NULL DEFAULT '',
        at timestamptz NOT NULL,
        auto boolean NOT NULL DEFAULT false
    );
    CREATE INDEX approvals_run ON {s}.approvals (run_id, step, seq);
    CREATE TABLE {s}.interrupt_decisions (
        seq bigserial PRIMARY KEY,
        run_id text NOT NULL,
        step text NOT NULL,
        choice text NOT NULL,
        actor text NOT NULL,
        at timestamptz NOT NULL
    );
    CREATE INDEX interrupt_decisions_run ON {s}.interrupt_decisions (run_id, seq);
    """,
    # 2: each run's last audit (seq, hash) per chain, for `runbook audit verify` (no foreign
    # key: the witness outlives a deleted run row, as the evidence does).
    """
    CREATE TABLE {s}.audit_witness (
        run_id text NOT NULL,
        chain text NOT NULL,
        seq bigint NOT NULL,
        hash text NOT NULL,
        PRIMARY KEY (run_id, chain)
    );
    """,
    # 3: plan hash and signature of each decision (DESIGN 11).
    """
    ALTER TABLE {s}.approvals ADD COLUMN data jsonb NOT NULL DEFAULT '{{}}';
    """,
    # 4: the outcome of a step's own rollback ("running" while it runs), so resume can finish it.
    """
    ALTER TABLE {s}.steps ADD COLUMN rollback text;
    """,
]

_RUN_COLUMNS = [f.name for f in fields(RunRecord)]
_UPDATABLE = frozenset(_RUN_COLUMNS) - {"run_id"}
_JSON_RUN_COLUMNS = ("params", "options")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _param(column: str, value: Any) -> Any:
    return Jsonb(value) if column in _JSON_RUN_COLUMNS else value


class _Statements:
    """Every statement of the store, composed once with the schema as a quoted identifier."""

    def __init__(self, schema: str) -> None:
        def q(template: LiteralString) -> sql.Composed:
            return schema_sql(schema, template)

        self.schema = schema
        self.create_run = q(
            "INSERT INTO {s}.runs (run_id, runbook_path, runbook_sha256, env, actor,"
            " status, params, created_at, updated_at, host, pid, options, error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now()), now(), %s, %s, %s, %s)"
            " ON CONFLICT (run_id) DO NOTHING"
        )
        self.get_run = q("SELECT * FROM {s}.runs WHERE run_id = %s")
        self.list_runs = q("SELECT * FROM {s}.runs ORDER BY created_at DESC, seq DESC LIMIT %s")
        self.list_runs_with_status = q(
            "SELECT * FROM {s}.runs WHERE status = %s ORDER BY created_at DESC, seq DESC LIMIT %s"
        )
        self.save_step = q(
            "INSERT INTO {s}.steps (run_id, name, status, output, error, attempts,"
            " started_at, finished_at, duration, reason, completed_seq, rollback)"
            " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
            " WHERE EXISTS (SELECT 1 FROM {s}.runs WHERE run_id = %s)"
            " ON CONFLICT (run_id, name) DO UPDATE SET status = excluded.status,"
            " output = excluded.output, error = excluded.error, attempts = excluded.attempts,"
            " started_at = excluded.started_at, finished_at = excluded.finished_at,"
            " duration = excluded.duration, reason = excluded.reason,"
            " completed_seq = excluded.completed_seq, rollback = excluded.rollback"
        )
        self.run_exists = q("SELECT 1 FROM {s}.runs WHERE run_id = %s")
        self.get_steps = q("SELECT * FROM {s}.steps WHERE run_id = %s ORDER BY name")
        self.add_approval = q(
            "INSERT INTO {s}.approvals (run_id, step, actor, decision, comment, at,"
            " auto, data) SELECT %s, %s, %s, %s, %s, COALESCE(%s, now()), %s, %s"
            " WHERE EXISTS (SELECT 1 FROM {s}.runs WHERE run_id = %s)"
        )
        approvals: LiteralString = (
            "SELECT run_id, step, actor, decision, comment, at, auto, data FROM {s}.approvals"
        )
        self.approvals = q(approvals + " WHERE run_id = %s ORDER BY seq")
        self.approvals_of_step = q(approvals + " WHERE run_id = %s AND step = %s ORDER BY seq")
        self.add_interrupt_decision = q(
            "INSERT INTO {s}.interrupt_decisions (run_id, step, choice, actor, at)"
            " SELECT %s, %s, %s, %s, COALESCE(%s, now())"
            " WHERE EXISTS (SELECT 1 FROM {s}.runs WHERE run_id = %s)"
        )
        self.interrupt_decisions = q(
            "SELECT run_id, step, choice, actor, at FROM {s}.interrupt_decisions"
            " WHERE run_id = %s ORDER BY seq"
        )
        self.witness_audit = q(
            "INSERT INTO {s}.audit_witness AS w (run_id, chain, seq, hash)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (run_id, chain) DO UPDATE"
            " SET seq = excluded.seq, hash = excluded.hash WHERE excluded.seq > w.seq"
        )
        witnesses: LiteralString = "SELECT run_id, chain, seq, hash FROM {s}.audit_witness"
        self.audit_witnesses = q(witnesses + " ORDER BY seq, chain, run_id")
        self.audit_witnesses_of_chain = q(
            witnesses + " WHERE chain = %s ORDER BY seq, chain, run_id"
        )
        self.audit_witness_of_run = q(witnesses + " WHERE run_id = %s AND chain = %s")

    def update_run(self, columns: Iterable[str], *, touch: bool) -> sql.Composed:
        """``columns`` are RunRecord fields (checked by the caller), each set from a parameter;
        ``touch`` also sets ``updated_at`` to the server's clock."""
        sets: list[sql.Composable] = [
            sql.SQL("{} = %s").format(sql.Identifier(column)) for column in columns
        ]
        if touch:
            sets.append(sql.SQL("updated_at = now()"))
        return schema_sql(
            self.schema,
            "UPDATE {s}.runs SET {sets} WHERE run_id = %s RETURNING *",
            sets=sql.SQL(", ").join(sets),
        )


def _step_params(step: StepRecord) -> tuple[Any, ...]:
    """``save_step``'s parameters: the row, then the run id its existence is checked by."""
    return (
        step.run_id,
        step.name,
        step.status,
        Jsonb(step.output),
        step.error,
        step.attempts,
        step.started_at,
        step.finished_at,
        step.duration,
        step.reason,
        step.completed_seq,
        step.rollback,
        step.run_id,
    )


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._target = PgTarget.parse(url, "store")
        self._db = Database(self._target, StoreError, "store")
        self._sql = _Statements(self._target.schema)
        self._db.open(
            lambda conn: ensure_version(
                conn, self._target.schema, "store", MIGRATIONS, StoreError, self._target.safe_url
            )
        )

    def __repr__(self) -> str:
        return f"PostgresStore({self._target.safe_url!r})"

    @property
    def database_identity(self) -> tuple[tuple[str, str], ...]:
        """Which database this store writes to (``PgTarget.identity``: no password in it)."""
        return self._target.identity

    @contextmanager
    def transaction(self, action: str = "write to") -> Iterator[psycopg.Connection]:
        """One transaction around several calls, on this thread: every method called inside it
        joins it instead of committing on its own, and the connection it yields lets the audit
        sink of the same database insert its events in the same commit. Nothing is visible to
        other connections before that commit; an exception rolls all of it back."""
        with self._db.joined(f"{action} the run store") as conn:
            yield conn

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        with self._db.statement(f"create run {run.run_id}") as conn:
            cur = conn.execute(
                self._sql.create_run,
                (
                    run.run_id,
                    run.runbook_path,
                    run.runbook_sha256,
                    run.env,
                    run.actor,
                    run.status,
                    Jsonb(run.params),
                    run.created_at,
                    run.host,
                    run.pid,
                    Jsonb(run.options),
                    run.error,
                ),
            )
            if cur.rowcount == 0:
                raise StoreError(f"run {run.run_id!r} already exists in {self._target.safe_url}")

    def update_run(self, run_id: str, **changes: Any) -> RunRecord:
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise TypeError(f"update_run: unknown run field(s): {', '.join(sorted(unknown))}")
        query = self._sql.update_run(changes, touch="updated_at" not in changes)
        values = [_param(col, value) for col, value in changes.items()]
        with self._db.statement(f"update run {run_id}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            row = cur.execute(query, (*values, run_id)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self._target.safe_url}")
        return self._run(row)

    def get_run(self, run_id: str) -> RunRecord:
        with self._db.statement(f"read run {run_id}") as conn:
            row = conn.cursor(row_factory=dict_row).execute(self._sql.get_run, (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self._target.safe_url}")
        return self._run(row)

    def list_runs(self, *, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        args: tuple[object, ...]
        if status is None:
            query, args = self._sql.list_runs, (max(limit, 0),)
        else:
            query, args = self._sql.list_runs_with_status, (status, max(limit, 0))
        with self._db.statement("list runs") as conn:
            rows = conn.cursor(row_factory=dict_row).execute(query, args).fetchall()
        return [self._run(row) for row in rows]

    def _run(self, row: dict[str, Any]) -> RunRecord:
        run_id = row["run_id"]
        for column in _JSON_RUN_COLUMNS:
            if not isinstance(row[column], dict):
                raise StoreCorrupt(
                    f"{self._target.safe_url}: run {run_id!r}: column {column!r} holds "
                    f"{type(row[column]).__name__}, expected a JSON object; nothing was changed"
                )
        for column in ("runbook_path", "runbook_sha256", "env", "actor", "status", "host"):
            if not isinstance(row[column], str) or (column == "status" and not row[column]):
                raise StoreCorrupt(
                    f"{self._target.safe_url}: run {run_id!r}: column {column!r} "
                    f"holds {row[column]!r}; nothing was changed"
                )
        values = {col: row[col] for col in _RUN_COLUMNS}
        values["created_at"] = _utc(values["created_at"])
        values["updated_at"] = _utc(values["updated_at"])
        return RunRecord(**values)

    def _require_run(self, rowcount: int, run_id: str) -> None:
        if rowcount == 0:
            raise RunNotFound(f"no run {run_id!r} in {self._target.safe_url}")

    # -- steps -------------------------------------------------------------------------------

    def save_step(self, step: StepRecord) -> None:
        with self._db.statement(f"save step {step.name} of run {step.run_id}") as conn:
            cur = conn.execute(self._sql.save_step, _step_params(step))
            self._require_run(cur.rowcount, step.run_id)

    def save_steps(self, steps: Sequence[StepRecord]) -> None:
        """The rows of one transition in one transaction, sent as one ``executemany`` (psycopg
        pipelines it: one round trip, not one per row); each row is written only if its run
        exists, so fewer rows than steps names the missing run and rolls all of them back."""
        if not steps:
            return
        with self._db.transaction(f"save {len(steps)} steps of run {steps[0].run_id}") as conn:
            cur = conn.cursor()
            cur.executemany(self._sql.save_step, [_step_params(step) for step in steps])
            if cur.rowcount != len(steps):
                for run_id in dict.fromkeys(step.run_id for step in steps):
                    found = conn.execute(self._sql.run_exists, (run_id,)).fetchone()
                    self._require_run(0 if found is None else 1, run_id)

    def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        with self._db.statement(f"read steps of run {run_id}") as conn:
            rows = (
                conn.cursor(row_factory=dict_row).execute(self._sql.get_steps, (run_id,)).fetchall()
            )
        steps = {}
        for row in rows:
            if not isinstance(row["status"], str) or not row["status"]:
                raise StoreCorrupt(
                    f"{self._target.safe_url}: run {run_id!r}: step "
                    f"{row['name']!r}: column 'status' holds {row['status']!r}"
                )
            row["started_at"] = _utc(row["started_at"])
            row["finished_at"] = _utc(row["finished_at"])
            steps[row["name"]] = StepRecord(**row)
        return steps

    # -- approvals and interrupt decisions ---------------------------------------------------

    def add_approval(self, approval: ApprovalRecord) -> None:
        with self._db.statement(f"record approval of run {approval.run_id}") as conn:
            cur = conn.execute(
                self._sql.add_approval,
                (
                    approval.run_id,
                    approval.step,
                    approval.actor,
                    approval.decision,
                    approval.comment,
                    approval.at,
                    approval.auto,
                    Jsonb(approval.data),
                    approval.run_id,
                ),
            )
            self._require_run(cur.rowcount, approval.run_id)

    def approvals(self, run_id: str, step: str | None = None) -> list[ApprovalRecord]:
        args: tuple[object, ...]
        if step is None:
            query, args = self._sql.approvals, (run_id,)
        else:
            query, args = self._sql.approvals_of_step, (run_id, step)
        with self._db.statement(f"read approvals of run {run_id}") as conn:
            rows = conn.cursor(row_factory=dict_row).execute(query, args).fetchall()
        return [ApprovalRecord(**{**row, "at": _utc(row["at"])}) for row in rows]

    def add_interrupt_decision(self, decision: InterruptDecision) -> None:
        with self._db.statement(f"record interrupt decision of run {decision.run_id}") as conn:
            cur = conn.execute(
                self._sql.add_interrupt_decision,
                (
                    decision.run_id,
                    decision.step,
                    decision.choice,
                    decision.actor,
                    decision.at,
                    decision.run_id,
                ),
            )
            self._require_run(cur.rowcount, decision.run_id)

    def interrupt_decisions(self, run_id: str) -> list[InterruptDecision]:
        with self._db.statement(f"read interrupt decisions of run {run_id}") as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(self._sql.interrupt_decisions, (run_id,))
                .fetchall()
            )
        return [InterruptDecision(**{**row, "at": _utc(row["at"])}) for row in rows]

    # -- audit witness -----------------------------------------------------------------------

    def witness_audit(self, run_id: str, chain: str, seq: int, hash: str) -> None:
        with self._db.statement(f"witness the audit head of run {run_id}") as conn:
            conn.execute(self._sql.witness_audit, (run_id, chain, seq, hash))

    def audit_witness(self, run_id: str, chain: str) -> AuditWitness | None:
        with self._db.statement("read an audit witness") as conn:
            row = conn.execute(self._sql.audit_witness_of_run, (run_id, chain)).fetchone()
        return None if row is None else AuditWitness(row[0], row[1], int(row[2]), row[3])

    def audit_witnesses(self, chain: str | None = None) -> list[AuditWitness]:
        args: tuple[object, ...]
        if chain is None:
            query, args = self._sql.audit_witnesses, ()
        else:
            query, args = self._sql.audit_witnesses_of_chain, (chain,)
        with self._db.statement("read the audit witnesses") as conn:
            rows = conn.execute(query, args).fetchall()
        return [AuditWitness(r, c, int(q), h) for r, c, q, h in rows]

    def close(self) -> None:
        self._db.close()
