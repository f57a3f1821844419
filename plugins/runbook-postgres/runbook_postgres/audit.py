"""``postgresql://``: the audit trail in an append-only table, one hash chain for every host.

``append`` takes a transaction-scoped advisory lock on the sink's schema before reading the chain
head, so appenders on several hosts take turns and still form a single chain. A transition's
events are one transaction (``append_many``), and when the run store is in the same database that
transaction is the store's own (``shares_file_with``): one commit for rows, events and witness.
Each row keeps the event's canonical JSON as *text* (JSONB would re-order keys and re-format
numbers, and the hash is over exact bytes) next to indexed copies of the fields queries filter
on. A trigger refuses UPDATE, DELETE and TRUNCATE; a superuser can still get around it
(``session_replication_role = replica``, ``ALTER TABLE ... DISABLE TRIGGER``), which is why
``verify`` re-computes the chain from the stored JSON and checks every indexed column against it,
``at`` included: ``--since``/``--until`` filter on that column, so an edited ``at`` would hide an
event from a time-bounded query while the JSON still verified.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from runbook.audit.events import GENESIS, AuditEvent, chain_after, parse_event
from runbook.audit.query import AuditQuery
from runbook.audit.verify import BadEvent, Check, VerifyReport, verify_chain
from runbook.errors import AuditError
from runbook.urls import parse_url
from runbook_postgres._db import Database, PgTarget, ensure_version, schema_sql

MIGRATIONS: list[LiteralString] = [
    """
    CREATE TABLE {s}.audit_events (
        seq bigint PRIMARY KEY,
        run_id text NOT NULL,
        step text,
        kind text NOT NULL,
        actor text NOT NULL DEFAULT '',
        at timestamptz,
        event text NOT NULL,
        prev_hash text NOT NULL,
        hash text NOT NULL
    );
    CREATE INDEX audit_events_run ON {s}.audit_events (run_id, seq);
    CREATE INDEX audit_events_step ON {s}.audit_events (step, seq);
    CREATE INDEX audit_events_kind ON {s}.audit_events (kind, seq);
    CREATE INDEX audit_events_actor ON {s}.audit_events (actor, seq);
    CREATE INDEX audit_events_at ON {s}.audit_events (at);
    CREATE FUNCTION {s}.audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the runbook audit trail is append-only: % on %.% refused',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END
    $$;
    CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON {s}.audit_events
        FOR EACH ROW EXECUTE FUNCTION {s}.audit_events_append_only();
    CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON {s}.audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.audit_events_append_only();
    """,
]

_PAGE = 1000


class _Statements:
    """Every statement of the sink, composed once with the schema as a quoted identifier."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.head = schema_sql(
            schema, "SELECT seq, hash FROM {s}.audit_events ORDER BY seq DESC LIMIT 1"
        )
        self.append = schema_sql(
            schema,
            "INSERT INTO {s}.audit_events (seq, run_id, step, kind, actor, at, event,"
            " prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        )
        self.verify_page = schema_sql(
            schema,
            "SELECT seq, run_id, step, kind, actor, at, prev_hash, hash, event"
            " FROM {s}.audit_events WHERE seq > %s ORDER BY seq LIMIT %s",
        )

    def page(self, where: Sequence[sql.Composable]) -> sql.Composed:
        """Events matching every condition of ``where`` (each with its own parameter)."""
        return schema_sql(
            self.schema,
            "SELECT seq, event FROM {s}.audit_events WHERE {where} ORDER BY seq LIMIT %s",
            where=sql.SQL(" AND ").join(where),
        )


def _at(value: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class PostgresSink:
    def __init__(self, url: str, best_effort: bool = False) -> None:
        self.url = url
        self.best_effort = best_effort
        self._target = PgTarget.parse(url, "audit")
        self._db = Database(self._target, AuditError, "audit sink")
        self._sql = _Statements(self._target.schema)
        self._db.open(
            lambda conn: ensure_version(
                conn, self._target.schema, "audit", MIGRATIONS, AuditError, self._target.safe_url
            )
        )

    def __repr__(self) -> str:
        return f"PostgresSink({self._target.safe_url!r})"

    @property
    def chain_id(self) -> str:
        """Server, database and schema (not the user: an auditor's read-only role reads the
        same chain): what the run store's witness is keyed on."""
        parsed = parse_url(self.url, "audit", several_hosts=True)
        host, path = parsed.host or "localhost", parsed.parts.path
        return f"postgresql://{host}:{parsed.port or 5432}{path}?schema={self._target.schema}"

    def append(self, event: AuditEvent) -> AuditEvent:
        return self.append_many([event])[0]

    def append_many(
        self, events: Sequence[AuditEvent], conn: psycopg.Connection | None = None
    ) -> list[AuditEvent]:
        """Chain and insert ``events`` in one transaction: one commit for all of them.

        ``conn``: the run store's open transaction on this same database (``shares_file_with``,
        ``PostgresStore.transaction``): the rows join it, so a transition's step rows, its events
        and the witness commit together or not at all. The chain lock is taken on that
        connection, so it is held until that commit: no other appender can read the head before
        these rows are committed, or build on rows that are rolled back.
        """
        if not events:
            return []
        doing = f"append {events[0].kind} event of run {events[0].run_id}"
        if conn is None:
            with self._db.transaction(doing, pipeline=True) as own:
                return self._insert(own, events)
        with self._db.errors(doing):  # the server gone: this sink's idle connections are too
            return self._insert(conn, events)

    def _insert(self, conn: psycopg.Connection, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        """Inside a transaction: the chain lock, the head read under it, then the rows."""
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('runbook-audit'), hashtext(%s))",
            (self._target.schema,),
        )
        head = conn.execute(self._sql.head).fetchone()
        seq, prev = (head[0], head[1]) if head else (0, GENESIS)
        stored = chain_after(seq, prev, events)
        rows = [
            (
                e.seq,
                e.run_id,
                e.step,
                e.kind,
                e.actor,
                _at(e.at),
                e.stored_line(),
                e.prev_hash,
                e.hash,
            )
            for e in stored
        ]
        conn.cursor().executemany(self._sql.append, rows)
        return stored

    def shares_file_with(self, store: Any) -> bool:
        """True when ``store`` is a PostgreSQL run store on this very database (same server,
        database, role and connection security: ``PgTarget.identity``; any schema), whose
        ``transaction`` can carry this sink's rows. The name is the recorder's protocol
        (``AuditLog.joins``), shared with the sqlite sink, for which it is a file."""
        identity = getattr(store, "database_identity", None)
        if identity is None or not callable(getattr(store, "transaction", None)):
            return False
        return bool(identity == self._target.identity)

    def events(self, query: AuditQuery | None = None) -> Iterator[AuditEvent]:
        """Served by SQL in pages keyed on ``seq``, so no connection is held between pages."""
        q = query or AuditQuery()
        where: list[sql.Composable] = [sql.SQL("seq > %s")]
        args: list[Any] = []
        for column, value in (
            ("run_id", q.run_id),
            ("step", q.step),
            ("kind", q.kind),
            ("actor", q.actor),
        ):
            if value:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                args.append(value)
        if q.since:
            where.append(sql.SQL("at >= %s"))
            args.append(q.since)
        if q.until:
            where.append(sql.SQL("at <= %s"))
            args.append(q.until)
        statement = self._sql.page(where)
        remaining = q.limit or None
        after = 0
        while True:
            page = min(_PAGE, remaining) if remaining else _PAGE
            rows = self._page(statement, [after, *args], page)
            for seq, text in rows:
                yield self._parse(seq, text)
            if remaining:
                remaining -= len(rows)
                if remaining <= 0:
                    return
            if len(rows) < page:
                return
            after = rows[-1][0]

    def _page(self, statement: sql.Composed, args: list[Any], limit: int) -> list[tuple[int, str]]:
        with self._db.statement("read events") as conn:
            return conn.execute(statement, (*args, limit)).fetchall()

    def _parse(self, seq: int, text: str) -> AuditEvent:
        try:
            return parse_event(text)
        except ValueError as exc:
            raise AuditError(
                f"PostgreSQL audit sink {self._target.safe_url}: event {seq} is "
                f"not a readable audit event ({exc}); run `runbook audit verify`"
            ) from None

    def verify(self, checks: Sequence[Check] = ()) -> VerifyReport:
        """The chain over the stored JSON, plus every indexed column checked against that JSON."""

        def stream() -> Iterator[AuditEvent]:
            after = 0
            while True:
                with self._db.statement("verify the chain") as conn:
                    rows = conn.execute(self._sql.verify_page, (after, _PAGE)).fetchall()
                for seq, run_id, step, kind, actor, at, prev_hash, hash_, text in rows:
                    try:
                        event = parse_event(text)
                    except ValueError as exc:
                        raise BadEvent(seq, f"event {seq} is not valid event JSON: {exc}") from None
                    columns = {
                        "seq": seq,
                        "run_id": run_id,
                        "step": step,
                        "kind": kind,
                        "actor": actor,
                        "at": at,
                        "prev_hash": prev_hash,
                        "hash": hash_,
                    }
                    hashed = {
                        "seq": event.seq,
                        "run_id": event.run_id,
                        "step": event.step,
                        "kind": event.kind,
                        "actor": event.actor,
                        "at": _at(event.at),
                        "prev_hash": event.prev_hash,
                        "hash": event.hash,
                    }
                    differ = sorted(k for k in columns if columns[k] != hashed[k])
                    if differ:
                        shown = "; ".join(
                            f"{k} is {columns[k]!s} but the hashed event says {hashed[k]!s}"
                            for k in differ
                        )
                        raise BadEvent(
                            seq,
                            f"event {seq} ({event.kind}) was edited: column(s) "
                            f"{', '.join(differ)} no longer match the hashed JSON ({shown})",
                        )
                    yield event
                if len(rows) < _PAGE:
                    return
                after = rows[-1][0]

        return verify_chain(stream(), checks)

    def close(self) -> None:
        self._db.close()
