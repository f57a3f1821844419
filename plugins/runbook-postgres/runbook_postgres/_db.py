"""What the store, the lock provider and the audit sink share: URL options, the pool, migrations.

Each provider owns one small ``psycopg_pool.ConnectionPool`` of autocommit connections, and every
method is one transaction, so it happened entirely or not at all: a single statement (its own
transaction in autocommit mode, one round trip), or BEGIN .. COMMIT in pipeline mode when it needs
a lock and a read before its write. ``Database.joined`` opens one transaction that every call on
the same thread joins until it ends: the recorder's one commit per transition, which a sink in the
same database (``PgTarget.identity``) writes into too. The
pool is not health-checked on every checkout (that would double the latency of each write);
instead a connection failure is reported once as the provider's error type and the pool then
drops its dead connections, so the call after it gets a fresh one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, LiteralString
from urllib.parse import parse_qsl, urlencode, urlunsplit

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from runbook.errors import ConfigError, RunbookError
from runbook.urls import parse_url, redact_url

DEFAULT_SCHEMA = "runbook"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Options runbook reads itself; every other query parameter goes to libpq (sslmode, ...).
_OWN_OPTIONS = ("schema", "pool_max", "pool_timeout")
# libpq parameters that change neither which server, database and role a connection reaches nor
# how it is secured: ignored when deciding whether two URLs name the same database. The password
# above all: it is never part of an identity, which may be compared and shown.
_NOT_IDENTITY = frozenset(
    {"password", "passfile", "application_name", "fallback_application_name", "connect_timeout"}
)


@dataclass(frozen=True)
class PgTarget:
    """A parsed ``postgresql://`` URL: what libpq gets, and what runbook keeps for itself."""

    url: str
    conninfo: str
    schema: str
    pool_max: int
    pool_timeout: float
    password: str | None

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    @property
    def identity(self) -> tuple[tuple[str, str], ...]:
        """Which database, reached how: the libpq parameters of the URL, sorted, without the
        password and the cosmetic ones (``_NOT_IDENTITY``), the port defaulted, host names
        lower-cased; the schema is not part of it (one transaction spans schemas).

        Two URLs with the same identity reach the same database as the same role with the same
        TLS settings, so a write may travel on either's connection (``Database.joined``). Two
        spellings of one server (``localhost`` and ``127.0.0.1``) differ: a false "different"
        only costs the shared commit, a false "same" would send the audit over a connection it
        did not ask for.
        """
        params = {
            key: str(value)
            for key, value in conninfo_to_dict(self.conninfo).items()
            if key not in _NOT_IDENTITY and value is not None
        }
        params.setdefault("port", "5432")
        if "host" in params:
            params["host"] = params["host"].lower()
        return tuple(sorted(params.items()))

    @classmethod
    def parse(cls, url: str, setting: str, *, default_pool_max: int = 4) -> PgTarget:
        """``url`` (the value of ``setting``: store, lock or audit) read and checked; any problem
        is a ``ConfigError``, before a connection is tried."""
        parts = parse_url(url, setting, several_hosts=True).parts
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(f"{redact_url(url)}: expected a postgresql:// URL")
        own: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _OWN_OPTIONS:
                own[key] = value
            else:
                rest.append((key, value))
        schema = own.get("schema", DEFAULT_SCHEMA)
        if not _IDENT.match(schema):
            raise ConfigError(
                f"{redact_url(url)}: schema {schema!r} must be a plain SQL identifier "
                "(letters, digits, underscore; at most 63 characters)"
            )
        try:
            pool_max = int(own.get("pool_max", default_pool_max))
            pool_timeout = float(own.get("pool_timeout", 10.0))
        except ValueError as exc:
            raise ConfigError(f"{redact_url(url)}: bad pool option: {exc}") from None
        given = dict(rest)
        if "application_name" not in given:
            rest.append(("application_name", "runbook"))
        if "connect_timeout" not in given:  # libpq waits forever by default
            rest.append(("connect_timeout", "5"))
        conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
        password = parts.password or dict(rest).get("password")
        return cls(url, conninfo, schema, max(pool_max, 1), pool_timeout, password)


def schema_sql(schema: str, template: LiteralString, **parts: sql.Composable) -> sql.Composed:
    """``template`` with ``{s}`` standing for the quoted schema (and ``{name}`` for ``parts``).

    Query text is only ever literal SQL composed with ``psycopg.sql``: the schema comes from a
    URL, so it enters as an ``Identifier`` (quoted by psycopg), never by string formatting.
    Braces meant for PostgreSQL are doubled, as in ``str.format``.
    """
    return sql.SQL(template).format(s=sql.Identifier(schema), **parts)


def _configure(conn: psycopg.Connection) -> None:
    # UTC on the session so timestamptz values come back as UTC datetimes on every host.
    conn.execute("SET TIME ZONE 'UTC'")


class Database:
    """A pool plus the translation of driver errors into ``error_type`` with a redacted URL."""

    def __init__(self, target: PgTarget, error_type: type[RunbookError], what: str) -> None:
        self.target = target
        self.error_type = error_type
        self.what = what
        self.pool = psycopg_pool.ConnectionPool(
            target.conninfo,
            min_size=1,
            max_size=target.pool_max,
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
            timeout=target.pool_timeout,
            num_workers=1,
            name=f"runbook-{what}",
        )
        self._local = threading.local()  # .conn: this thread's open joined() transaction

    def open(self, migrate: Callable[[psycopg.Connection], None]) -> None:
        """Connect once directly (to report *why* a server is unreachable), migrate, then pool."""
        try:
            with psycopg.connect(self.target.conninfo, autocommit=True) as conn:
                _configure(conn)
                with conn.transaction():
                    migrate(conn)
        except psycopg.Error as exc:
            raise self.fail("cannot open", exc) from None
        self.pool.open()

    def fail(self, doing: str, exc: BaseException) -> RunbookError:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.target.password:
            message = message.replace(self.target.password, "***")
        if isinstance(exc, psycopg_pool.PoolTimeout):
            message = (
                f"no connection available within {self.target.pool_timeout:g}s (is the server up?)"
            )
        return self.error_type(f"PostgreSQL {self.what} {self.target.safe_url}: {doing}: {message}")

    @contextmanager
    def transaction(self, doing: str, *, pipeline: bool = False) -> Iterator[psycopg.Connection]:
        """One transaction on a pooled connection; driver errors become ``error_type``.

        ``pipeline=True`` sends the statements without waiting for each answer (libpq pipeline
        mode), so BEGIN .. COMMIT costs one or two network round trips instead of one per
        statement. Only for bodies that read results with ``fetchone`` (which syncs), never
        ``rowcount`` straight after ``execute``. Inside ``joined`` on this thread: part of that
        transaction (no pipeline: its statements may read ``rowcount``).
        """
        shared = self._joined()
        if shared is not None:
            with self.errors(doing):
                yield shared
            return
        with self.errors(doing), self.pool.connection() as conn:
            if pipeline:
                with conn.pipeline(), conn.transaction():
                    yield conn
            else:
                with conn.transaction():
                    yield conn

    @contextmanager
    def statement(self, doing: str) -> Iterator[psycopg.Connection]:
        """A pooled autocommit connection for *one* statement, which is its own transaction
        (inside ``joined`` on this thread: a statement of that transaction)."""
        shared = self._joined()
        if shared is not None:
            with self.errors(doing):
                yield shared
            return
        with self.errors(doing), self.pool.connection() as conn:
            yield conn

    @contextmanager
    def joined(self, doing: str) -> Iterator[psycopg.Connection]:
        """One transaction that every ``statement`` and ``transaction`` of this database on this
        thread joins until it ends, and whose connection another component writing to the same
        database may use (the audit sink's rows): one commit for all of it, or nothing.

        Thread-local, not a lock: other threads (another run of the process, a reader) keep
        using the pool meanwhile, each call its own transaction, as outside ``joined``.
        """
        shared = self._joined()
        if shared is not None:  # nested: still the one outer transaction
            yield shared
            return
        with self.transaction(doing) as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    def _joined(self) -> psycopg.Connection | None:
        return getattr(self._local, "conn", None)

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Driver errors as ``error_type`` (password redacted); a lost connection also weeds the
        pool's dead ones. For work on a connection this pool did not lend (``joined``'s)."""
        broken = False
        try:
            yield
        except RunbookError:
            raise
        except psycopg.OperationalError as exc:
            broken = True
            raise self.fail(doing, exc) from None
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self.fail(doing, exc) from None
        finally:
            if broken:
                # A lost server usually kills every idle connection too: weed them out now so
                # the next call does not trip over the next dead one.
                self.pool.check()

    def close(self) -> None:
        self.pool.close()


def ensure_version(
    conn: psycopg.Connection,
    schema: str,
    component: str,
    migrations: Sequence[LiteralString],
    error_type: type[RunbookError],
    safe_url: str,
) -> None:
    """Bring ``component``'s tables to the latest version, serialised across hosts.

    The advisory lock is transaction-scoped, so a host that dies mid-migration releases it and
    its half-done DDL rolls back with it (PostgreSQL DDL is transactional).
    """
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('runbook-migrate'), hashtext(%s))", (schema,)
    )
    current = _current_version(conn, schema, component)
    if current > len(migrations):
        raise error_type(
            f"PostgreSQL {safe_url}: schema {schema!r} has {component} version {current}, newer "
            f"than this runbook-postgres knows ({len(migrations)}); upgrade runbook-postgres"
        )
    if current == len(migrations):
        return  # no DDL at all: a role without CREATE privileges can use a migrated schema
    conn.execute(schema_sql(schema, "CREATE SCHEMA IF NOT EXISTS {s}"))
    conn.execute(
        schema_sql(
            schema,
            "CREATE TABLE IF NOT EXISTS {s}.schema_version ("
            " component text PRIMARY KEY, version integer NOT NULL,"
            " migrated_at timestamptz NOT NULL DEFAULT now())",
        )
    )
    for version in range(current + 1, len(migrations) + 1):
        conn.execute(schema_sql(schema, migrations[version - 1]))
    conn.execute(
        schema_sql(
            schema,
            "INSERT INTO {s}.schema_version (component, version) VALUES (%s, %s) ON CONFLICT"
            " (component) DO UPDATE SET version = excluded.version, migrated_at = now()",
        ),
        (component, len(migrations)),
    )


def _current_version(conn: psycopg.Connection, schema: str, component: str) -> int:
    table = sql.Identifier(schema, "schema_version")
    exists = conn.execute("SELECT to_regclass(%s)", (table.as_string(conn),)).fetchone()
    if not exists or exists[0] is None:
        return 0
    row = conn.execute(
        sql.SQL("SELECT version FROM {} WHERE component = %s").format(table), (component,)
    ).fetchone()
    return int(row[0]) if row else 0


def options_flag(value: Any) -> bool:
    return str(value).lower() in {"1", "true", "yes", "on"}
