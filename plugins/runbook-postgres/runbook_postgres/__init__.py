"""runbook-postgres: a team's run store, lock provider and audit sink in one PostgreSQL database.

``postgresql://user:password@host:5432/db?schema=runbook`` serves all three provider kinds; each
kind is registered by its own hook, so one scheme does not clash with itself. ``schema`` (default
``runbook``) isolates one team or one test; ``pool_max`` (default 4) and ``pool_timeout`` (seconds,
default 10) size the per-provider connection pool; any other query option goes to libpq
(``sslmode=verify-full``, ``connect_timeout``...).
"""

from __future__ import annotations

from typing import Any

from runbook.hookspecs import Provider, hookimpl

__version__ = "0.2.0"

_SCHEMES = ("postgresql", "postgres")


def _store(url: str, **_: Any) -> Any:
    from runbook_postgres.store import PostgresStore

    return PostgresStore(url)


def _locks(url: str, **_: Any) -> Any:
    from runbook_postgres.locks import PostgresLocks

    return PostgresLocks(url)


def _sink(url: str, best_effort: Any = False, **_: Any) -> Any:
    from runbook_postgres._db import options_flag
    from runbook_postgres.audit import PostgresSink

    return PostgresSink(url, best_effort=options_flag(best_effort))


@hookimpl
def runbook_run_stores() -> list[Provider]:
    return [Provider(s, _store, "runs shared by every host using the database") for s in _SCHEMES]


@hookimpl
def runbook_lock_providers() -> list[Provider]:
    return [
        Provider(s, _locks, "leases on the database server's clock, fencing tokens from a sequence")
        for s in _SCHEMES
    ]


@hookimpl
def runbook_audit_sinks() -> list[Provider]:
    return [
        Provider(s, _sink, "append-only hash-chained table, one chain for all hosts")
        for s in _SCHEMES
    ]
