"""``console://``: one line per notification on stderr (``console://stdout`` for stdout).

The default channel, and the simplest example of a notifier plugin: a ``Provider`` for a
scheme, whose ``open(url, **options)`` returns an object with ``async send(message)`` and
``async aclose()``.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from runbook.errors import ConfigError
from runbook.hookspecs import Provider, hookimpl
from runbook.notify.base import Message

_STREAMS = {"": "stderr", "stderr": "stderr", "stdout": "stdout"}


def format_line(message: Message) -> str:
    """``[runbook] ERROR deploy failed in prod | run 01J... | step s | error: ... | run: ...``."""
    parts = [f"[runbook] {message.severity.upper()} {message.title}"]
    if message.run_id:
        parts.append(f"run {message.run_id}")
    if message.step:
        parts.append(f"step {message.step}")
    if message.error:
        parts.append(f"error: {message.error}")
    if message.command:
        parts.append(f"run: {message.command}")
    # One line, whatever the error text holds: a log reader greps for lines.
    return " | ".join(" ".join(p.split()) for p in parts)


class ConsoleNotifier:
    def __init__(self, url: str = "console://", stream: TextIO | None = None) -> None:
        target = url.split("://", 1)[1].strip("/").lower() if "://" in url else ""
        if target not in _STREAMS:
            raise ConfigError(
                f"console notifier: unknown stream {target!r} in {url!r}; use "
                "console:// (stderr) or console://stdout"
            )
        self.url = url
        self._name = _STREAMS[target]
        self._stream = stream

    async def send(self, message: Message) -> None:
        # Resolved at send time so redirected streams (pytest's capture, a CLI wrapper) are used.
        stream = self._stream or getattr(sys, self._name)
        print(format_line(message), file=stream, flush=True)

    async def aclose(self) -> None:
        pass


def _open(url: str, stream: TextIO | None = None, **_: Any) -> ConsoleNotifier:
    return ConsoleNotifier(url, stream)


@hookimpl
def runbook_notifiers() -> list[Provider]:
    return [Provider("console", _open, "one line per notification on stderr (console://stdout)")]
