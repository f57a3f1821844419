"""The PostgreSQL lock provider: the shared contract, then real processes and real failures."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from runbook_postgres.locks import PostgresLocks

from runbook.errors import LeaseLost, LockError
from runbook.plugins import Plugins
from runbook.testing.lock_contract import CHECKS, RealTime

pytestmark = pytest.mark.service


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_contract(check, pg_url: str) -> None:
    check(lambda: PostgresLocks(pg_url), RealTime())


def test_registered_for_postgresql_urls(pg_url: str) -> None:
    provider = Plugins().open("lock", pg_url)
    try:
        assert isinstance(provider, PostgresLocks)
    finally:
        provider.close()


def test_tokens_increase_across_lock_names(pg_url: str) -> None:
    """One sequence for all names: a token never repeats anywhere in the database."""
    p = PostgresLocks(pg_url)
    try:
        a = p.acquire("a", "run-1", actor="alice", lease=10)
        b = p.acquire("b", "run-2", actor="bob", lease=10)
        assert a and b and b.token > a.token
    finally:
        p.close()


def test_lease_times_come_from_the_server(pg_url: str, pg_admin: psycopg.Connection) -> None:
    row = pg_admin.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
    assert row is not None
    server_now = row[0]
    p = PostgresLocks(pg_url)
    try:
        lease = p.acquire("clock", "run-1", actor="alice", lease=30)
        assert lease is not None
        assert abs(lease.acquired_at - float(server_now)) < 5
        assert lease.expires_at - lease.acquired_at == pytest.approx(30, abs=0.01)
    finally:
        p.close()


def _wait_for_line(proc, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    assert time.monotonic() < deadline and line, proc.stderr.read()
    return json.loads(line)


@pytest.mark.slow
def test_two_processes_never_hold_the_lock_at_once(pg_url: str, tmp_path: Path, spawn) -> None:
    log = tmp_path / "log"
    name = f"contended-{uuid.uuid4().hex[:6]}"
    procs = [
        spawn.module(
            "runbook.testing.lock_worker", "contend", pg_url, name, f"proc-{i}", "15", str(log)
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 2 * 2 * 15
    tokens = []
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        # Every "enter" is followed by the same holder's "exit": no interleaving.
        assert enter[0] == "enter" and leave[0] == "exit" and enter[1:] == leave[1:], lines
        tokens.append(int(enter[2]))
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert {line[1] for line in lines} == {"proc-0", "proc-1"}


@pytest.mark.slow
def test_sigkilled_holder_is_reclaimed_after_its_lease(pg_url: str, spawn) -> None:
    name = f"killed-{uuid.uuid4().hex[:6]}"
    holder = spawn.module("runbook.testing.lock_worker", "hold", pg_url, name, "run-dead", "1.0")
    try:
        token = _wait_for_line(holder)["token"]
        assert token is not None
        p = PostgresLocks(pg_url)
        try:
            assert p.acquire(name, "run-new", actor="bob", lease=10) is None
            holding = p.holder(name)
            assert holding is not None and holding.owner == "run-dead"
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
            deadline = time.monotonic() + 10
            while (lease := p.acquire(name, "run-new", actor="bob", lease=10)) is None:
                assert time.monotonic() < deadline, "lock never became reclaimable"
                time.sleep(0.05)
            assert lease.token > token
            holding = p.holder(name)
            assert holding is not None and holding.owner == "run-new"
        finally:
            p.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.slow
def test_tokens_strictly_increase_across_processes(pg_url: str, spawn) -> None:
    name = f"tokens-{uuid.uuid4().hex[:6]}"
    procs = [
        spawn.module("runbook.testing.lock_worker", "cycle", pg_url, name, f"proc-{i}", "10")
        for i in range(2)
    ]
    seen = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        tokens = json.loads(out)["tokens"]
        assert tokens == sorted(tokens)
        seen += tokens
    assert len(set(seen)) == 20, "two processes were handed the same fencing token"
    p = PostgresLocks(pg_url)
    try:
        after = p.acquire(name, "run-last", actor="alice", lease=10)
        assert after and after.token > max(seen)
    finally:
        p.close()


def test_renew_after_terminated_connection_recovers(
    pg_url: str, pg_schema: str, pg_admin: psycopg.Connection, terminate
) -> None:
    p = PostgresLocks(pg_url)
    try:
        lease = p.acquire("web", "run-1", actor="alice", lease=30)
        assert lease is not None
        assert terminate(pg_schema) >= 1
        with pytest.raises(LockError) as info:
            p.renew(lease, 30)
        assert not isinstance(info.value, LeaseLost)
        assert "PostgreSQL lock provider" in str(info.value)
        assert "renew lock 'web'" in str(info.value)
        renewed = p.renew(lease, 30)  # the pool replaced its dead connection
        assert renewed.token == lease.token
    finally:
        p.close()


def test_unreachable_server_is_a_lock_error_without_the_password() -> None:
    with pytest.raises(LockError) as info:
        PostgresLocks("postgresql://deploy:hunter2@127.0.0.1:1/db?connect_timeout=2")
    message = str(info.value)
    assert "hunter2" not in message
    assert "postgresql://deploy:***@127.0.0.1:1/db" in message
    assert "cannot open" in message
