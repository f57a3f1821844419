"""``postgresql://``: leased locks with fencing tokens, shared by every host using the database.

One row per lock name. Every change to a name (acquire, renew, release) runs in a transaction that
first takes ``pg_advisory_xact_lock`` on the name, so they are serialised per name across hosts and
the lock is freed by the server itself if a client dies mid-transaction. Leases are measured on
the *server's* clock (``clock_timestamp()``): the hosts' clocks may drift apart without one host
thinking another's lease has expired early. Fencing tokens come from one sequence, so they strictly
increase across all names and hosts and are never reused, even after a lock row is deleted.
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
from psycopg import sql

from runbook.errors import LeaseLost, LockError
from runbook.locks.base import Lease
from runbook_postgres._db import Database, PgTarget, ensure_version, schema_sql

MIGRATIONS: list[LiteralString] = [
    """
    CREATE SEQUENCE {s}.lock_tokens AS bigint;
    CREATE TABLE {s}.locks (
        name text PRIMARY KEY,
        owner text NOT NULL,
        actor text NOT NULL DEFAULT '',
        token bigint NOT NULL,
        acquired_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE INDEX locks_expires ON {s}.locks (expires_at);
    """,
]

_LEASE_COLUMNS = sql.SQL(
    "name, owner, token, actor, extract(epoch FROM acquired_at)::float8,"
    " extract(epoch FROM expires_at)::float8"
)


class _Statements:
    """Every statement of the provider, composed once with the schema as a quoted identifier."""

    def __init__(self, schema: str) -> None:
        # nextval() takes the sequence's name as text. The server quotes the schema
        # (quote_ident), so no client-side quoting is needed before a connection exists.
        tokens = sql.SQL("quote_ident({}) || '.lock_tokens'").format(sql.Literal(schema))

        def q(template: LiteralString) -> sql.Composed:
            return schema_sql(schema, template, lease=_LEASE_COLUMNS, tokens=tokens)

        self.current = q(
            "SELECT owner, expires_at > clock_timestamp() FROM {s}.locks WHERE name = %s"
        )
        self.extend = q(
            "UPDATE {s}.locks SET expires_at = clock_timestamp()"
            " + make_interval(secs => %s / 1000.0) WHERE name = %s RETURNING {lease}"
        )
        self.take = q(
            "INSERT INTO {s}.locks (name, owner, actor, token, acquired_at, expires_at)"
            " VALUES (%s, %s, %s, nextval({tokens}),"
            " clock_timestamp(), clock_timestamp() + make_interval(secs => %s / 1000.0))"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
            " actor = excluded.actor, token = excluded.token,"
            " acquired_at = excluded.acquired_at, expires_at = excluded.expires_at"
            " RETURNING {lease}"
        )
        self.renew = q(
            "UPDATE {s}.locks SET expires_at = clock_timestamp()"
            " + make_interval(secs => %s / 1000.0)"
            " WHERE name = %s AND owner = %s AND token = %s"
            " AND expires_at > clock_timestamp() RETURNING {lease}"
        )
        self.release = q("DELETE FROM {s}.locks WHERE name = %s AND owner = %s AND token = %s")
        self.live = q(
            "SELECT {lease} FROM {s}.locks WHERE name = %s AND expires_at > clock_timestamp()"
        )
        self.held = q(
            "SELECT {lease} FROM {s}.locks WHERE expires_at > clock_timestamp() ORDER BY name"
        )


def _lease(row: Any) -> Lease:
    name, owner, token, actor, acquired_at, expires_at = row
    return Lease(
        name=name,
        owner=owner,
        token=int(token),
        actor=actor,
        acquired_at=float(acquired_at),
        expires_at=float(expires_at),
    )


def _interval_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class PostgresLocks:
    def __init__(self, url: str) -> None:
        self.url = url
        self._target = PgTarget.parse(url, "lock")
        self._db = Database(self._target, LockError, "lock provider")
        self._sql = _Statements(self._target.schema)
        self._db.open(
            lambda conn: ensure_version(
                conn, self._target.schema, "locks", MIGRATIONS, LockError, self._target.safe_url
            )
        )

    def __repr__(self) -> str:
        return f"PostgresLocks({self._target.safe_url!r})"

    def _guard(self, conn: psycopg.Connection, name: str) -> None:
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
            ("runbook-lock:" + self._target.schema, name),
        )

    def acquire(self, name: str, owner: str, *, actor: str, lease: float) -> Lease | None:
        ms = _interval_ms(lease)
        with self._db.transaction(f"acquire lock {name!r}", pipeline=True) as conn:
            self._guard(conn, name)
            row = conn.execute(self._sql.current, (name,)).fetchone()
            if row is not None and row[1]:  # a live lease
                if row[0] != owner:
                    return None
                return _lease(conn.execute(self._sql.extend, (ms, name)).fetchone())
            return _lease(conn.execute(self._sql.take, (name, owner, actor, ms)).fetchone())

    def renew(self, lease: Lease, seconds: float) -> Lease:
        with self._db.transaction(f"renew lock {lease.name!r}", pipeline=True) as conn:
            self._guard(conn, lease.name)
            row = conn.execute(
                self._sql.renew, (_interval_ms(seconds), lease.name, lease.owner, lease.token)
            ).fetchone()
            if row is None:
                now_holder = self._live(conn, lease.name)
                by = (
                    f"; now held by run {now_holder.owner} with token {now_holder.token}"
                    if now_holder
                    else ""
                )
                raise LeaseLost(
                    f"lease on lock {lease.name!r} (token {lease.token}) was lost:"
                    f" it expired or was taken over{by}"
                )
            return _lease(row)

    def release(self, lease: Lease) -> None:
        with self._db.transaction(f"release lock {lease.name!r}", pipeline=True) as conn:
            self._guard(conn, lease.name)
            conn.execute(self._sql.release, (lease.name, lease.owner, lease.token))

    def _live(self, conn: psycopg.Connection, name: str) -> Lease | None:
        row = conn.execute(self._sql.live, (name,)).fetchone()
        return _lease(row) if row else None

    def holder(self, name: str) -> Lease | None:
        with self._db.statement(f"read lock {name!r}") as conn:
            return self._live(conn, name)

    def held(self) -> list[Lease]:
        with self._db.statement("list locks") as conn:
            rows = conn.execute(self._sql.held).fetchall()
        return [_lease(row) for row in rows]

    def close(self) -> None:
        self._db.close()
