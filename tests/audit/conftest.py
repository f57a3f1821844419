"""Shared builders: realistic events, and each stored sink behind one small tampering interface."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runbook.audit.events import AuditEvent
from runbook.audit.query import open_sink

T0 = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)

# (kind, step, actor) of a small run: who did what, in order.
SCRIPT = [
    ("run_started", None, "alice"),
    ("lock_acquired", "switch", "alice"),
    ("step_started", "stage", "alice"),
    ("step_succeeded", "stage", "alice"),
    ("approval_requested", "switch", "alice"),
    ("approval_granted", "switch", "bob"),
    ("step_failed", "switch", "alice"),
    ("rollback_started", "stage", "alice"),
    ("rollback_succeeded", "stage", "alice"),
    ("run_finished", None, "alice"),
]


def make_event(
    i: int,
    *,
    run_id: str = "run-1",
    kind: str | None = None,
    step: str | None = None,
    actor: str | None = None,
    **data: Any,
) -> AuditEvent:
    """The i-th event of a run, one minute apart, looking like what the engine writes."""
    k, s, a = SCRIPT[i % len(SCRIPT)]
    return AuditEvent(
        kind=kind or k,
        run_id=run_id,
        runbook={"path": "runbooks/deploy.py", "sha256": "ab" * 32},
        step=step if step is not None else s,
        actor=actor or a,
        host="ops-1",
        env="prod",
        at=(T0 + timedelta(minutes=i)).isoformat(),
        params={"version": "1.4.2", "registry_token": "***"},
        data=data or {"attempt": 1, "duration_ms": 1200 + i},
    )


class Stored:
    """A sink on disk plus raw access for a test that plays the attacker."""

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        self.sink = open_sink(url)

    def fill(self, n: int, **kwargs: Any) -> list[AuditEvent]:
        return [self.sink.append(make_event(i, **kwargs)) for i in range(n)]


class JsonlStored(Stored):
    def lines(self) -> list[str]:
        return self.path.read_text().splitlines(keepends=True)

    def write_lines(self, lines: list[str]) -> None:
        self.path.write_text("".join(lines))

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    def write_docs(self, docs: list[dict[str, Any]]) -> None:
        self.write_lines([json.dumps(d, sort_keys=True) + "\n" for d in docs])


class SqliteStored(Stored):
    def sql(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            return conn.execute(statement, args).fetchall()


@pytest.fixture
def jsonl(tmp_path: Path) -> Iterator[JsonlStored]:
    stored = JsonlStored(f"jsonl://{tmp_path / 'audit.jsonl'}", tmp_path / "audit.jsonl")
    yield stored
    stored.sink.close()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[SqliteStored]:
    stored = SqliteStored(f"sqlite:///{tmp_path / 'runbook.db'}", tmp_path / "runbook.db")
    yield stored
    stored.sink.close()


@pytest.fixture(params=["jsonl", "sqlite"])
def stored(request: pytest.FixtureRequest) -> Stored:
    """Each queryable on-disk sink, for behaviour every one of them must share."""
    name = "sqlite_db" if request.param == "sqlite" else "jsonl"
    return request.getfixturevalue(name)


def forge(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What an attacker who knows the scheme writes: changed fields and a recomputed hash."""
    forged = AuditEvent.from_dict({**event, **changes, "hash": None})
    return forged.chained(forged.seq or 0, forged.prev_hash or "").to_dict()


ForgeFn = Callable[..., dict[str, Any]]


from .trails import audit_keys, pg_admin_conn, signed_trail, signer  # noqa: E402, F401
