"""Registers the built-in audit sinks by URL scheme."""

from __future__ import annotations

from typing import Any

from runbook.audit.memory import MemorySink
from runbook.hookspecs import Provider, hookimpl


def _truthy(value: object) -> bool:
    return str(value).lower() in {"1", "true", "yes", "on"}


def _memory(url: str, best_effort: bool = False, **_: Any) -> MemorySink:
    return MemorySink(url, _truthy(best_effort))


def _jsonl(url: str, best_effort: bool = False, **options: Any) -> Any:
    from runbook.audit.jsonl import JsonlSink

    return JsonlSink.open(url, best_effort=best_effort, **options)


def _sqlite(url: str, best_effort: bool = False, **options: Any) -> Any:
    from runbook.audit.sqlite import SqliteSink

    return SqliteSink.open(url, best_effort=best_effort, **options)


def _logging(url: str, best_effort: bool = False, **options: Any) -> Any:
    from runbook.audit.logsink import LoggingSink

    return LoggingSink.open(url, best_effort=best_effort, **options)


@hookimpl
def runbook_audit_sinks() -> list[Provider]:
    return [
        Provider("memory", _memory, "in-process chain, for tests"),
        Provider("jsonl", _jsonl, "append-only JSON lines file, flock + fsync (default)"),
        Provider("sqlite", _sqlite, "audit_events table in a SQLite file (the run store's)"),
        Provider("logging", _logging, "stdlib logger, one JSON record per event (a feed)"),
    ]
