"""Repository-wide test settings: keep the developer's own environment out of the tests."""

from __future__ import annotations

import os
from typing import Any

import pytest

_LEAKY = (
    "RUNBOOK_STORE",
    "RUNBOOK_ACTOR",
    "RUNBOOK_CONFIG",
    "RUNBOOK_TRACE_HOOKS",
    "RUNBOOK_DEBUG",
)


@pytest.fixture(autouse=True)
def _clean_runbook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _LEAKY:
        if name in os.environ:
            monkeypatch.delenv(name)


@pytest.fixture
def stolen_leases(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A lock provider (a class, called with an optional ``memory://`` URL) whose every renewal
    fails as if another holder took the lock after our lease ran out, with the lock manager's
    lease time on the project's fake clock: the keeper's wait between renewals takes no time,
    so it renews at once, and the lease never runs out locally (a failed renewal is reported
    for what it is, never as a lease run out on a slow machine). With renewals that succeed,
    the keeper would spin: hence both together."""
    from runbook.errors import LeaseLost
    from runbook.locks import manager as lock_manager
    from runbook.locks.memory import MemoryLocks
    from runbook.testing import FakeClock

    class LeaseTime(FakeClock):
        def __init__(self) -> None:
            super().__init__(freeze=False)

        async def wait_for(self, awaitable: Any, timeout: float) -> Any:
            return await awaitable

    class StealingLocks(MemoryLocks):
        def renew(self, lease: Any, seconds: float) -> Any:
            raise LeaseLost(f"lease on lock {lease.name!r} was taken over by run other-run")

    monkeypatch.setattr(lock_manager, "RealTime", LeaseTime)
    return StealingLocks
