"""Shared fakes for the notification tests: scripted channels behind a real plugin manager."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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


def run_async(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())
