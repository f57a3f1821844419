"""A signed, witnessed trail on each stored sink, and raw access to it for a test playing attacker.

Every trail is written the way a run writes it: through ``AuditLog`` (the run store witnesses each
event, an Ed25519 key signs a checkpoint at each run's end). The attacker then works on the stored
bytes: JSON lines for ``jsonl``, rows for ``sqlite`` and ``postgresql`` (with the append-only
trigger bypassed, as a superuser can).
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runbook.audit.events import AuditEvent
from runbook.audit.log import AuditLog
from runbook.audit.query import normalize_at, open_sink
from runbook.audit.signing import Signer, load_signer
from runbook.store.sqlite import SqliteStore

PG_URL = os.environ.get("RUNBOOK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def make_keys(folder: Path, name: str = "audit_key") -> tuple[Path, Path]:
    """An Ed25519 key pair in OpenSSH format, as ``ssh-keygen -t ed25519`` writes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = folder / name
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public = folder / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b" auditor@example\n"
    )
    return private, public


class Trail:
    """One sink's stored trail: write it, read its raw records, replace them."""

    name = ""

    def __init__(self, url: str, store_url: str, signer: Signer | None) -> None:
        self.url = url
        self.store_url = store_url
        self.signer = signer

    def write(self, events: list[AuditEvent]) -> list[AuditEvent]:
        """Append through AuditLog; returns what was stored, checkpoints included."""
        store = SqliteStore(self.store_url.removeprefix("sqlite:///"), url=self.store_url)
        log = AuditLog(open_sink(self.url), store=store, signer=self.signer)
        try:
            for event in events:
                log.append(event)
            return list(log.events())
        finally:
            log.close()
            store.close()

    def texts(self) -> list[str]:
        """Each stored event's JSON text, in storage order."""
        raise NotImplementedError

    def replace(self, texts: list[str], *, renumber: bool = False) -> None:
        """Store exactly these event texts, in this order. SQL rows keep each event's own seq,
        or with ``renumber`` get their position (an insertion shifts the rows after it)."""
        raise NotImplementedError

    def delete(self) -> None:
        """Remove the trail entirely: the file, the database, every row."""
        raise NotImplementedError

    def set_column(self, seq: int, column: str, value: Any) -> None:
        """Change one indexed column of one row, leaving the event JSON alone (SQL sinks)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def columns(text: str, position: int, renumber: bool) -> dict[str, Any]:
    """The indexed columns a SQL sink keeps beside the JSON, as runbook would have written them
    for this text (a duplicate key: the last copy, which is what the hash was computed over)."""
    doc = json.loads(text)
    return {
        "seq": position if renumber else doc.get("seq"),
        "run_id": doc.get("run_id", ""),
        "step": doc.get("step"),
        "kind": doc.get("kind", ""),
        "actor": doc.get("actor", ""),
        "at": doc.get("at", ""),
        "prev_hash": doc.get("prev_hash") or "",
        "hash": doc.get("hash") or "",
        "event": text,
    }


class JsonlTrail(Trail):
    name = "jsonl"

    def __init__(self, folder: Path, store_url: str, signer: Signer | None) -> None:
        self.path = folder / "audit.jsonl"
        super().__init__(f"jsonl://{self.path}", store_url, signer)

    def texts(self) -> list[str]:
        return self.path.read_text().splitlines()

    def replace(self, texts: list[str], *, renumber: bool = False) -> None:
        self.path.write_text("".join(t + "\n" for t in texts))

    def delete(self) -> None:
        self.path.unlink()


class SqliteTrail(Trail):
    name = "sqlite"

    def __init__(self, folder: Path, store_url: str, signer: Signer | None) -> None:
        self.path = folder / "audit.db"
        super().__init__(f"sqlite:///{self.path}", store_url, signer)

    def _sql(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            return conn.execute(statement, args).fetchall()

    def texts(self) -> list[str]:
        return [r[0] for r in self._sql("SELECT event FROM audit_events ORDER BY seq")]

    def replace(self, texts: list[str], *, renumber: bool = False) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.execute("DELETE FROM audit_events")
            for i, text in enumerate(texts, start=1):
                row = columns(text, i, renumber)
                row["at"] = normalize_at(row["at"])
                conn.execute(
                    "INSERT INTO audit_events (seq, run_id, step, kind, actor, at, prev_hash,"
                    " hash, event) VALUES (:seq, :run_id, :step, :kind, :actor, :at,"
                    " :prev_hash, :hash, :event)",
                    row,
                )

    def delete(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def set_column(self, seq: int, column: str, value: Any) -> None:
        self._sql(f"UPDATE audit_events SET {column} = ? WHERE seq = ?", value, seq)


class PostgresTrail(Trail):
    name = "postgresql"

    def __init__(self, admin: Any, schema: str, store_url: str, signer: Signer | None) -> None:
        self.admin = admin
        self.schema = schema
        super().__init__(f"{PG_URL}?schema={schema}", store_url, signer)

    def _replica(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """What a superuser can still do: skip the append-only triggers for one transaction."""
        with self.admin.transaction():
            self.admin.execute("SET LOCAL session_replication_role = replica")
            for statement, args in statements:
                self.admin.execute(statement, args)

    def texts(self) -> list[str]:
        rows = self.admin.execute(
            f'SELECT event FROM "{self.schema}".audit_events ORDER BY seq'
        ).fetchall()
        return [r[0] for r in rows]

    def replace(self, texts: list[str], *, renumber: bool = False) -> None:
        inserts = []
        for i, text in enumerate(texts, start=1):
            row = columns(text, i, renumber)
            row["at"] = datetime.fromisoformat(row["at"]) if row["at"] else None
            inserts.append(
                (
                    f'INSERT INTO "{self.schema}".audit_events (seq, run_id, step, kind, actor,'
                    " at, event, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    tuple(
                        row[k]
                        for k in (
                            "seq",
                            "run_id",
                            "step",
                            "kind",
                            "actor",
                            "at",
                            "event",
                            "prev_hash",
                            "hash",
                        )
                    ),
                )
            )
        self._replica((f'DELETE FROM "{self.schema}".audit_events', ()), *inserts)

    def delete(self) -> None:
        self._replica((f'DELETE FROM "{self.schema}".audit_events', ()))

    def set_column(self, seq: int, column: str, value: Any) -> None:
        self._replica(
            (f'UPDATE "{self.schema}".audit_events SET {column} = %s WHERE seq = %s', (value, seq))
        )


SINKS = ("jsonl", "sqlite", "postgresql")


@pytest.fixture(scope="session")
def audit_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("cryptography")
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def signer(audit_keys: tuple[Path, Path]) -> Signer:
    return load_signer(audit_keys[0])


@pytest.fixture
def pg_admin_conn() -> Iterator[Any]:
    """A superuser connection, or a skip (a failure under CI=true: the service must be there)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL not reachable (CI=true: a missing service fails): {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    with conn:
        yield conn


@pytest.fixture(params=SINKS)
def signed_trail(request: pytest.FixtureRequest, tmp_path: Path, signer: Signer) -> Iterator[Trail]:
    """Each stored sink, empty, with a run store beside it and the session's signing key."""
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    made: Trail
    if request.param == "jsonl":
        made = JsonlTrail(tmp_path, store_url, signer)
    elif request.param == "sqlite":
        made = SqliteTrail(tmp_path, store_url, signer)
    else:
        admin = request.getfixturevalue("pg_admin_conn")
        schema = f"rbaudit_{uuid.uuid4().hex[:12]}"
        made = PostgresTrail(admin, schema, store_url, signer)
        request.addfinalizer(lambda: admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    yield made
    made.close()
