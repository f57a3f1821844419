"""Fixtures for tests against a real PostgreSQL (RUNBOOK_TEST_POSTGRES).

Unreachable server: the tests skip, except under ``CI=true`` where they fail, so a CI machine
without PostgreSQL cannot pass by skipping. Every test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import pytest
from psycopg import sql

from runbook.testing.processes import ProcessGroup
from runbook.urls import redact_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "service: needs a real PostgreSQL or Redis")
    config.addinivalue_line("markers", "slow: spawns real processes")


def with_options(url: str, **options: str) -> str:
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    url = os.environ.get("RUNBOOK_TEST_POSTGRES", DEFAULT_URL)
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        message = f"PostgreSQL not reachable at {redact_url(url)}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: a missing service fails instead of skipping)")
        pytest.skip(message)
    return url


@pytest.fixture
def pg_schema(pg_server: str) -> Iterator[str]:
    name = f"rbtest_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_url(pg_server: str, pg_schema: str) -> str:
    """The provider URL for this test: its own schema and a recognisable application_name."""
    return with_options(pg_server, schema=pg_schema, application_name=pg_schema)


@pytest.fixture
def pg_admin(pg_server: str) -> Iterator[psycopg.Connection]:
    """A superuser connection outside runbook, for tampering and for killing backends."""
    with psycopg.connect(pg_server, autocommit=True) as conn:
        yield conn


@pytest.fixture
def terminate(pg_admin: psycopg.Connection) -> Callable[[str], int]:
    """Kill the server side of every connection with this application_name (a lost connection)."""

    def kill(application_name: str) -> int:
        pids = [
            pid
            for (pid,) in pg_admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            ).fetchall()
        ]
        for pid in pids:
            pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # pg_terminate_backend only signals: until those backends are gone, a pool's health
        # check can still pass on one, which then fails the write after it (a flaky "recovers").
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pg_admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        ).fetchone() != (0,):
            time.sleep(0.01)  # a real server's backends exiting: real time
        return len(pids)

    return kill


@pytest.fixture
def spawn() -> Iterator[ProcessGroup]:
    """``spawn("script.py", ...)`` runs a script of this folder, ``spawn.module(name, ...)`` a
    module; anything still running at teardown is killed."""
    with ProcessGroup(HERE) as group:
        yield group


_WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture
def pg_commits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The write transactions runbook's providers commit, counted at the driver: each pooled
    connection checkout is one transaction (runbook_postgres._db), and it is counted when an
    INSERT, UPDATE or DELETE ran on it. One entry per commit: the first write's SQL."""
    seen: list[str] = []
    real_connection = psycopg_pool.ConnectionPool.connection
    real_execute, real_many = psycopg.Cursor.execute, psycopg.Cursor.executemany
    wrote: dict[int, str] = {}

    def note(cur: psycopg.Cursor[Any], query: Any) -> None:
        text = query.as_string(cur.connection) if isinstance(query, sql.Composable) else str(query)
        if text.lstrip().upper().startswith(_WRITES):
            wrote.setdefault(id(cur.connection), text)

    def execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        note(self, query)
        return real_execute(self, query, *args, **kwargs)

    def executemany(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        note(self, query)
        return real_many(self, query, *args, **kwargs)

    @contextmanager
    def connection(self: psycopg_pool.ConnectionPool, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with real_connection(self, *args, **kwargs) as conn:
            wrote.pop(id(conn), None)
            try:
                yield conn
            finally:
                first = wrote.pop(id(conn), None)
                if first is not None:
                    seen.append(first)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    monkeypatch.setattr(psycopg.Cursor, "executemany", executemany)
    monkeypatch.setattr(psycopg_pool.ConnectionPool, "connection", connection)
    return seen
