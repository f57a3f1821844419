"""Registers the built-in lock providers by URL scheme."""

from __future__ import annotations

from runbook.hookspecs import Provider, hookimpl
from runbook.locks.file import FileLocks
from runbook.locks.memory import MemoryLocks
from runbook.locks.sqlite import SqliteLocks


@hookimpl
def runbook_lock_providers() -> list[Provider]:
    return [
        Provider("memory", lambda url, **_: MemoryLocks.open(url), "in-process locks"),
        Provider(
            "file", FileLocks.open, "leases in a directory, fcntl-guarded; one host (the default)"
        ),
        Provider(
            "sqlite", SqliteLocks.open, "leases in a SQLite database, shareable with the run store"
        ),
    ]
