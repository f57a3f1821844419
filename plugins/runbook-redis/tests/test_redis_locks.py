"""The Redis lock provider: the shared contract, then real processes and real failures."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis
from runbook_redis.locks import RedisLocks

from runbook.errors import ConfigError, LeaseLost, LockError
from runbook.locks.base import Lease
from runbook.plugins import Plugins
from runbook.testing.lock_contract import CHECKS, RealTime
from runbook.urls import redact_url

pytestmark = pytest.mark.service


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_contract(check, redis_url: str) -> None:
    check(lambda: RedisLocks(redis_url), RealTime())


@pytest.fixture
def locks(redis_url: str):
    provider = RedisLocks(redis_url)
    yield provider
    provider.close()


def test_registered_for_redis_urls(redis_url: str) -> None:
    provider = Plugins().open("lock", redis_url)
    try:
        assert isinstance(provider, RedisLocks) and provider.url == redis_url
    finally:
        provider.close()


def test_key_layout_is_documented_json(
    locks: RedisLocks, redis_admin: redis.Redis, redis_prefix: str
) -> None:
    lease = locks.acquire("web-prod", "run-1", actor="alice", lease=30)
    assert lease is not None
    raw = redis_admin.get(f"{redis_prefix}lock:web-prod")
    assert raw is not None
    value = json.loads(raw)
    assert value == {
        "owner": "run-1",
        "token": lease.token,
        "actor": "alice",
        "acquired_at": pytest.approx(lease.acquired_at, abs=0.01),
    }
    assert 29_000 < redis_admin.pttl(f"{redis_prefix}lock:web-prod") <= 30_000
    token = redis_admin.get(f"{redis_prefix}lock-token:web-prod")
    assert token is not None and int(token) == lease.token
    locks.release(lease)
    assert redis_admin.get(f"{redis_prefix}lock-token:web-prod") is not None, "never reset"


def test_prefix_isolates_providers(redis_server: str, redis_prefix: str) -> None:
    a = RedisLocks(f"{redis_server}?prefix={redis_prefix}a:")
    b = RedisLocks(f"{redis_server}?prefix={redis_prefix}b:")
    try:
        assert a.acquire("web", "run-1", actor="alice", lease=30)
        assert b.acquire("web", "run-2", actor="bob", lease=30), "another prefix, another lock"
        assert [lease.owner for lease in a.held()] == ["run-1"]
        assert [lease.owner for lease in b.held()] == ["run-2"]
    finally:
        a.close()
        b.close()


def test_glob_characters_in_names_and_prefix(redis_server: str, redis_prefix: str) -> None:
    p = RedisLocks(f"{redis_server}?prefix={redis_prefix}[x]*:")
    try:
        assert p.acquire("db:*?", "run-1", actor="alice", lease=30)
        assert [lease.name for lease in p.held()] == ["db:*?"]
    finally:
        p.close()


def test_renew_after_expiry_raises_lease_lost(locks: RedisLocks) -> None:
    lease = locks.acquire("web", "run-1", actor="alice", lease=0.2)
    assert lease is not None
    deadline = time.monotonic() + 5
    while locks.holder("web") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(LeaseLost, match=r"'web' .* was lost: it expired or was taken over"):
        locks.renew(lease, 30)


def test_renew_after_takeover_names_the_new_holder(locks: RedisLocks) -> None:
    old = locks.acquire("web", "run-1", actor="alice", lease=0.2)
    assert old is not None
    deadline = time.monotonic() + 5
    while (new := locks.acquire("web", "run-2", actor="bob", lease=30)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(LeaseLost, match=f"now held by run run-2 with token {new.token}"):
        locks.renew(old, 30)
    forged = Lease("web", "run-2", new.token - 1)
    with pytest.raises(LeaseLost):
        locks.renew(forged, 30)


def test_foreign_value_in_a_lock_key_is_reported(
    locks: RedisLocks, redis_admin: redis.Redis, redis_prefix: str
) -> None:
    redis_admin.set(f"{redis_prefix}lock:web", "not json", px=30_000)
    assert locks.acquire("web", "run-1", actor="alice", lease=30) is None
    with pytest.raises(LockError, match="does not hold a runbook lease"):
        locks.holder("web")


def _read_json(proc) -> dict:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return json.loads(line)


@pytest.mark.slow
def test_two_processes_never_hold_the_lock_at_once(redis_url: str, tmp_path: Path, spawn) -> None:
    log = tmp_path / "log"
    name = f"contended-{uuid.uuid4().hex[:6]}"
    procs = [
        spawn.module(
            "runbook.testing.lock_worker", "contend", redis_url, name, f"proc-{i}", "15", str(log)
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
        assert enter[0] == "enter" and leave[0] == "exit" and enter[1:] == leave[1:], lines
        tokens.append(int(enter[2]))
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


@pytest.mark.slow
def test_sigkilled_holder_is_reclaimed_after_its_lease(redis_url: str, spawn) -> None:
    name = f"killed-{uuid.uuid4().hex[:6]}"
    holder = spawn.module("runbook.testing.lock_worker", "hold", redis_url, name, "run-dead", "1.0")
    p = RedisLocks(redis_url)
    try:
        token = _read_json(holder)["token"]
        assert token is not None
        assert p.acquire(name, "run-new", actor="bob", lease=10) is None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (lease := p.acquire(name, "run-new", actor="bob", lease=10)) is None:
            assert time.monotonic() < deadline, "lock never became reclaimable"
            time.sleep(0.05)
        assert lease.token > token
    finally:
        p.close()
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.slow
def test_tokens_strictly_increase_across_processes(redis_url: str, spawn) -> None:
    name = f"tokens-{uuid.uuid4().hex[:6]}"
    procs = [
        spawn.module("runbook.testing.lock_worker", "cycle", redis_url, name, f"proc-{i}", "10")
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


def test_killed_connection_is_transparently_replaced(
    locks: RedisLocks, redis_admin: redis.Redis
) -> None:
    lease = locks.acquire("web", "run-1", actor="alice", lease=30)
    assert lease is not None
    name = f"runbook-test-{uuid.uuid4().hex[:8]}"
    locks._redis.client_setname(name)
    killed = 0
    for client in redis_admin.client_list():
        if client.get("name") == name:
            killed += redis_admin.client_kill_filter(_id=client["id"])
    assert killed == 1
    # Every operation is safe to retry (re-entrant acquire, compare-and-X renew/release).
    assert locks.renew(lease, 30).token == lease.token


def test_unreachable_server_is_a_lock_error_without_the_password() -> None:
    p = RedisLocks("redis://:t0ps3cret@127.0.0.1:1/0?socket_connect_timeout=1")
    try:
        with pytest.raises(LockError) as info:
            p.acquire("web", "run-1", actor="alice", lease=30)
    finally:
        p.close()
    message = str(info.value)
    assert "t0ps3cret" not in message
    assert message.startswith("Redis lock provider redis://:***@127.0.0.1:1/0")
    assert "acquire lock 'web'" in message and "refused" in message.lower()


def test_redact_url() -> None:
    assert redact_url("redis://u:pw@h:1/0?password=pw&prefix=x") == (
        "redis://u:***@h:1/0?password=***&prefix=x"
    )
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://u:pw@host:notaport/0", "lock: redis://u:***@host:***/0: the port is not a"),
        ("redis://h:99999/0", "lock: redis://h:***/0: the port must be from 1 to 65535"),
        ("redis://[::1", "lock: redis://***: an IPv6 host needs both its brackets"),
    ],
)
def test_a_malformed_host_or_port_is_a_config_error_naming_the_setting(
    url: str, message: str
) -> None:
    """No server needed: the URL is refused before a connection is tried (the bracket was
    urllib's ValueError, a traceback)."""
    with pytest.raises(ConfigError) as info:
        RedisLocks(url)
    assert str(info.value).startswith(message)


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        RedisLocks("redis://h:1/0?socket_timeout=soon")
