"""Shared fakes for the notification tests: scripted channels behind a real plugin manager."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runbook.audit.events import AuditEvent
from runbook.context import RunInfo
from runbook.hookspecs import Provider, hookimpl
from runbook.notify.base import Message
from runbook.plugins import Plugins

RUN = RunInfo(
    run_id="01JRUN",
    runbook="runbooks/deploy.py",
    name="deploy",
    sha256="ab" * 32,
    env="prod",
    actor="alice",
)


def event(kind: str, step: str | None = None, env: str = "prod", **data: Any) -> AuditEvent:
    return AuditEvent(
        kind=kind,
        run_id=RUN.run_id,
        runbook={"path": RUN.runbook},
        step=step,
        actor="alice",
        host="ci-1",
        env=env,
        at="2026-01-01T00:00:00+00:00",
        data=data,
    )


class FakeChannel:
    """A notifier whose ``send`` runs a script: each entry is an exception to raise, ``"hang"``
    to never answer, or None to succeed; past the script's end every send succeeds."""

    def __init__(self, url: str, script: list[Any] | None = None) -> None:
        self.url = url
        self.script = list(script or [])
        self.attempts: list[Message] = []
        self.delivered: list[Message] = []
        self.closed = False

    async def send(self, message: Message) -> None:
        self.attempts.append(message)
        step = self.script.pop(0) if self.script else None
        if step == "hang":
            await asyncio.Event().wait()
        if isinstance(step, BaseException):
            raise step
        self.delivered.append(message)

    async def aclose(self) -> None:
        self.closed = True


class FakePlugin:
    """Serves ``fake://...`` channels, one ``FakeChannel`` per URL, and counts the opens."""

    def __init__(self) -> None:
        self.channels: dict[str, FakeChannel] = {}
        self.scripts: dict[str, list[Any]] = {}
        self.opens: list[str] = []

    def channel(self, url: str) -> FakeChannel:
        return self.channels[url]

    def _open(self, url: str, **options: Any) -> FakeChannel:
        self.opens.append(url)
        self.channels[url] = FakeChannel(url, self.scripts.get(url))
        return self.channels[url]

    @hookimpl
    def runbook_notifiers(self) -> list[Provider]:
        return [Provider("fake", self._open, "scripted, for tests")]


@pytest.fixture
def fake() -> FakePlugin:
    return FakePlugin()


@pytest.fixture
def plugins(fake: FakePlugin) -> Plugins:
    return Plugins([fake], entry_points=False)


class Sleeps:
    """A fake ``sleep``: records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.statuses = statuses
        self.requests: list[tuple[str, dict[str, str], bytes, int]] = []


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.server.requests.append((self.path, dict(self.headers), body, status))
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    """A real HTTP receiver on 127.0.0.1 answering the scripted statuses, then 200."""
    srv = Recorder([])
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
