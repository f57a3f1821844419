"""Test plugin for the chaos test: SIGKILL this process at the CHAOS_AT-th durable write.

Wraps the SQLite run store (``chaos://PATH``) and the JSONL audit sink (``chaosjsonl://PATH``):
every write is a moment just before and just after it; when the count reaches ``CHAOS_AT`` the
process kills itself with SIGKILL (no cleanup, no flush, no finally), exactly like kill -9.
Without ``CHAOS_AT`` it only passes calls through.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from runbook.hookspecs import Provider, hookimpl

_AT = int(os.environ.get("CHAOS_AT") or 0)
_count = 0


def moment() -> None:
    global _count
    _count += 1
    if _AT and _count >= _AT:
        os.kill(os.getpid(), signal.SIGKILL)


class _Wrapped:
    _writes: tuple[str, ...] = ()

    def __init__(self, inner: Any, url: str) -> None:
        self._inner = inner
        self.url = url

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._writes:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            moment()
            out = attr(*args, **kwargs)
            moment()
            return out

        return write


class ChaosStore(_Wrapped):
    _writes = (
        "create_run",
        "update_run",
        "save_step",
        "save_steps",
        "add_interrupt_decision",
        "add_approval",
    )


class ChaosSink(_Wrapped):
    _writes = ("append", "append_many")

    @property
    def best_effort(self) -> bool:
        return self._inner.best_effort


def _store(url: str, **options: Any) -> ChaosStore:
    from runbook.store.sqlite import open_url

    return ChaosStore(open_url("sqlite://" + url.split("://", 1)[1], **options), url)


def _sink(url: str, best_effort: bool = False, **options: Any) -> ChaosSink:
    from runbook.audit.jsonl import JsonlSink

    # No fsync: SIGKILL loses no written byte (the page cache survives the process).
    path = "jsonl://" + url.split("://", 1)[1]
    inner = JsonlSink.open(path, best_effort=best_effort, **{**options, "fsync": False})
    return ChaosSink(inner, url)


@hookimpl
def runbook_run_stores() -> list[Provider]:
    return [Provider("chaos", _store, "SQLite, killed at the CHAOS_AT-th write")]


@hookimpl
def runbook_audit_sinks() -> list[Provider]:
    return [Provider("chaosjsonl", _sink, "JSONL, killed at the CHAOS_AT-th write")]
