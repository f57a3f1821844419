"""Fixtures for tests against a real Redis (RUNBOOK_TEST_REDIS).

Unreachable server: the tests skip, except under ``CI=true`` where they fail, so a CI machine
without Redis cannot pass by skipping. Every test gets its own key prefix, deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runbook.testing.processes import ProcessGroup
from runbook.urls import redact_url

DEFAULT_URL = "redis://127.0.0.1:6379/0"
HERE = Path(__file__).parent


def with_options(url: str, **options: str) -> str:
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "service: needs a real PostgreSQL or Redis")
    config.addinivalue_line("markers", "slow: spawns real processes")


@pytest.fixture(scope="session")
def redis_server() -> str:
    url = os.environ.get("RUNBOOK_TEST_REDIS", DEFAULT_URL)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        message = f"Redis not reachable at {redact_url(url)}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: a missing service fails instead of skipping)")
        pytest.skip(message)
    return url


@pytest.fixture
def redis_admin(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_admin: redis.Redis) -> Iterator[str]:
    prefix = f"rbtest-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(redis_admin.scan_iter(match=prefix + "*"))
    if keys:
        redis_admin.delete(*keys)


@pytest.fixture
def redis_url(redis_server: str, redis_prefix: str) -> str:
    return with_options(redis_server, prefix=redis_prefix)


@pytest.fixture
def spawn() -> Iterator[ProcessGroup]:
    """``spawn("script.py", ...)`` runs a script of this folder, ``spawn.module(name, ...)`` a
    module; anything still running at teardown is killed."""
    with ProcessGroup(HERE) as group:
        yield group
