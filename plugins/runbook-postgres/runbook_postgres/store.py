"""``postgresql://``: the run store shared by every host of a team.

Same semantics as the built-in stores: one transaction per method, outputs/params/options as JSONB,
times as ``timestamptz`` (returned as UTC). A row that is not what runbook wrote raises
``StoreCorrupt`` naming the run and the column instead of handing the engine a half-read record.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

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
from runbook_postgres._db import Database, PgTarget, ensure_version

MIGRATIONS = [
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


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._target = PgTarget.parse(url)
        self._db = Database(self._target, StoreError, "store")
        self._s = f'"{self._target.schema}"'
        self._db.open(
            lambda conn: ensure_version(
                conn, self._target.schema, "store", MIGRATIONS, StoreError, self._target.safe_url
            )
        )

    def __repr__(self) -> str:
        return f"PostgresStore({self._target.safe_url!r})"

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        with self._db.statement(f"create run {run.run_id}") as conn:
            cur = conn.execute(
                f"INSERT INTO {self._s}.runs (run_id, runbook_path, runbook_sha256, env, actor,"
                " status, params, created_at, updated_at, host, pid, options, error)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now()), now(), %s, %s, %s, %s)"
                " ON CONFLICT (run_id) DO NOTHING",
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
        sets = [f"{col} = %s" for col in changes]
        values = [_param(col, value) for col, value in changes.items()]
        if "updated_at" not in changes:
            sets.append("updated_at = now()")
        with self._db.statement(f"update run {run_id}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            row = cur.execute(
                f"UPDATE {self._s}.runs SET {', '.join(sets)} WHERE run_id = %s RETURNING *",
                (*values, run_id),
            ).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self._target.safe_url}")
        return self._run(row)

    def get_run(self, run_id: str) -> RunRecord:
        with self._db.statement(f"read run {run_id}") as conn:
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(f"SELECT * FROM {self._s}.runs WHERE run_id = %s", (run_id,))
                .fetchone()
            )
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self._target.safe_url}")
        return self._run(row)

    def list_runs(self, *, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        where, args = ("WHERE status = %s", [status]) if status is not None else ("", [])
        with self._db.statement("list runs") as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    f"SELECT * FROM {self._s}.runs {where} ORDER BY created_at DESC, seq DESC"
                    " LIMIT %s",
                    (*args, max(limit, 0)),
                )
                .fetchall()
            )
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
            cur = conn.execute(
                f"INSERT INTO {self._s}.steps (run_id, name, status, output, error, attempts,"
                " started_at, finished_at, duration, reason, completed_seq)"
                " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
                f" WHERE EXISTS (SELECT 1 FROM {self._s}.runs WHERE run_id = %s)"
                " ON CONFLICT (run_id, name) DO UPDATE SET status = excluded.status,"
                " output = excluded.output, error = excluded.error, attempts = excluded.attempts,"
                " started_at = excluded.started_at, finished_at = excluded.finished_at,"
                " duration = excluded.duration, reason = excluded.reason,"
                " completed_seq = excluded.completed_seq",
                (
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
                    step.run_id,
                ),
            )
            self._require_run(cur.rowcount, step.run_id)

    def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        with self._db.statement(f"read steps of run {run_id}") as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    f"SELECT * FROM {self._s}.steps WHERE run_id = %s ORDER BY name", (run_id,)
                )
                .fetchall()
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
                f"INSERT INTO {self._s}.approvals (run_id, step, actor, decision, comment, at,"
                " auto, data) SELECT %s, %s, %s, %s, %s, COALESCE(%s, now()), %s, %s"
                f" WHERE EXISTS (SELECT 1 FROM {self._s}.runs WHERE run_id = %s)",
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
        where, args = "run_id = %s", [run_id]
        if step is not None:
            where, args = where + " AND step = %s", [*args, step]
        with self._db.statement(f"read approvals of run {run_id}") as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "SELECT run_id, step, actor, decision, comment, at, auto, data"
                    f" FROM {self._s}.approvals WHERE {where} ORDER BY seq",
                    args,
                )
                .fetchall()
            )
        return [ApprovalRecord(**{**row, "at": _utc(row["at"])}) for row in rows]

    def add_interrupt_decision(self, decision: InterruptDecision) -> None:
        with self._db.statement(f"record interrupt decision of run {decision.run_id}") as conn:
            cur = conn.execute(
                f"INSERT INTO {self._s}.interrupt_decisions (run_id, step, choice, actor, at)"
                " SELECT %s, %s, %s, %s, COALESCE(%s, now())"
                f" WHERE EXISTS (SELECT 1 FROM {self._s}.runs WHERE run_id = %s)",
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
                .execute(
                    f"SELECT run_id, step, choice, actor, at FROM {self._s}.interrupt_decisions"
                    " WHERE run_id = %s ORDER BY seq",
                    (run_id,),
                )
                .fetchall()
            )
        return [InterruptDecision(**{**row, "at": _utc(row["at"])}) for row in rows]

    # -- audit witness -----------------------------------------------------------------------

    def witness_audit(self, run_id: str, chain: str, seq: int, hash: str) -> None:
        with self._db.statement(f"witness the audit head of run {run_id}") as conn:
            conn.execute(
                f"INSERT INTO {self._s}.audit_witness AS w (run_id, chain, seq, hash)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (run_id, chain) DO UPDATE"
                " SET seq = excluded.seq, hash = excluded.hash WHERE excluded.seq > w.seq",
                (run_id, chain, seq, hash),
            )

    def audit_witnesses(self, chain: str | None = None) -> list[AuditWitness]:
        where, args = ("WHERE chain = %s", (chain,)) if chain is not None else ("", ())
        with self._db.statement("read the audit witnesses") as conn:
            rows = conn.execute(
                f"SELECT run_id, chain, seq, hash FROM {self._s}.audit_witness {where}"
                " ORDER BY seq, chain, run_id",
                args,
            ).fetchall()
        return [AuditWitness(r, c, int(q), h) for r, c, q, h in rows]

    def close(self) -> None:
        self._db.close()
