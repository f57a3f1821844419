"""LockManager: ordering, waiting through the clock, progress, renewal, loss, extension."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from datetime import UTC, datetime

import pytest

from runbook.errors import LeaseLost, LockError, LockHeld
from runbook.locks.base import Lease
from runbook.locks.manager import LockManager
from runbook.locks.memory import MemoryLocks
from runbook.testing.lock_contract import ManualTime


class FakeClock:
    """monotonic()/asleep() that advance instantly; records every sleep."""

    def __init__(self, on_sleep=None) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.t

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        if self.on_sleep:
            self.on_sleep(self.t)


class Flaky(MemoryLocks):
    """A memory provider whose renewals can be made to fail or to hang."""

    def __init__(self) -> None:
        super().__init__()
        self.renew_error: Exception | None = None
        self.hang = threading.Event()
        self.hanging = False
        self.renewals: list[float] = []

    def renew(self, lease: Lease, seconds: float) -> Lease:
        self.renewals.append(seconds)
        if self.hanging:
            self.hang.wait(10)
        if self.renew_error:
            raise self.renew_error
        return super().renew(lease, seconds)


def manager(provider, owner="run-1", actor="alice", **kwargs) -> LockManager:
    kwargs.setdefault("clock", FakeClock())
    kwargs.setdefault("rng", random.Random(7))
    return LockManager(provider, owner=owner, actor=actor, **kwargs)


def test_acquire_in_sorted_order_and_all_or_nothing() -> None:
    async def main() -> None:
        provider = MemoryLocks(now=ManualTime())
        other = provider.acquire("b", "run-2", actor="bob", lease=60)
        m = manager(provider)
        with pytest.raises(LockHeld):
            await m.acquire(["c", "b", "a"])
        # "a" was taken first (sorted order), then given back when "b" was refused.
        assert provider.holder("a") is None and m.lease_of("a") is None
        provider.release(other)
        leases = await m.acquire(["c", "b", "a"])
        assert [lease.name for lease in leases] == ["a", "b", "c"]
        await m.release_all()
        assert provider.held() == []

    asyncio.run(main())


def test_reentrant_per_run_and_released_with_the_last_reference() -> None:
    async def main() -> None:
        provider = MemoryLocks(now=ManualTime())
        m = manager(provider)
        (run_lock,) = await m.acquire(["web-dev"])
        (step_lock,) = await m.acquire(["web-dev"])  # a step lock with the run lock's name
        assert step_lock.token == run_lock.token
        await m.release(["web-dev"])
        assert provider.holder("web-dev") is not None
        await m.release(["web-dev"])
        assert provider.holder("web-dev") is None
        await m.aclose()

    asyncio.run(main())


def test_lock_timeout_waits_with_backoff_through_the_clock_then_names_the_holder() -> None:
    now = ManualTime(start=datetime(2026, 11, 23, 18, 0, tzinfo=UTC).timestamp())
    provider = MemoryLocks(now=now)
    provider.acquire("web-prod", "run-42", actor="alice", lease=3600)
    clock = FakeClock()
    waits: list[tuple[str, str, float]] = []
    m = manager(
        provider,
        owner="run-43",
        actor="bob",
        clock=clock,
        timeout=10,
        on_wait=lambda name, holder, waited: waits.append((name, holder.owner, waited)),
    )

    with pytest.raises(LockHeld) as info:
        asyncio.run(m.acquire(["web-prod"]))

    err = info.value
    assert (err.name, err.holder, err.actor) == ("web-prod", "run-42", "alice")
    assert err.since == "2026-11-23T18:00:00+00:00"
    assert str(err) == (
        "lock 'web-prod' is held by run run-42 (alice) since 2026-11-23T18:00:00+00:00"
    )
    assert err.exit_code == 5
    assert sum(clock.sleeps) == pytest.approx(10)
    assert clock.sleeps[1] > clock.sleeps[0]  # exponential backoff...
    assert max(clock.sleeps) <= 2.0  # ...capped
    # progress at most once per second of waiting, starting when the wait starts
    assert waits[0] == ("web-prod", "run-42", 0.0)
    assert 8 <= len(waits) <= 11
    times = [w[2] for w in waits]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))


def test_no_timeout_fails_at_once_without_waiting() -> None:
    provider = MemoryLocks(now=ManualTime())
    provider.acquire("db", "run-1", actor="alice", lease=60)
    clock = FakeClock()
    waits: list[object] = []
    m = manager(provider, owner="run-2", clock=clock, on_wait=lambda *a: waits.append(a))
    with pytest.raises(LockHeld, match=r"held by run run-1 \(alice\)"):
        asyncio.run(m.acquire(["db"]))
    assert clock.sleeps == [] and waits == []


def test_a_wait_ends_when_the_holder_releases() -> None:
    provider = MemoryLocks(now=ManualTime())
    held = provider.acquire("db", "run-1", actor="alice", lease=60)
    assert held is not None
    clock = FakeClock(on_sleep=lambda t: provider.release(held) if t > 1003 else None)
    m = manager(provider, owner="run-2", clock=clock, timeout=60)

    async def main() -> Lease:
        (lease,) = await m.acquire(["db"])
        await m.release_all()
        return lease

    lease = asyncio.run(main())
    assert lease.owner == "run-2" and lease.token == held.token + 1
    assert 3 < sum(clock.sleeps) < 10


def _until(predicate, seconds: float = 5.0):
    """Bounded real-time polling: renewal runs in real time by design."""

    async def wait() -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                await asyncio.sleep(0.005)

    return wait()


def test_leases_are_renewed_in_real_time_while_held() -> None:
    async def main() -> None:
        provider = Flaky()
        m = manager(provider, lease=0.05)
        (first,) = await m.acquire(["db"])
        await _until(lambda: len(provider.renewals) >= 3)
        lease = m.lease_of("db")
        assert lease is not None and lease.expires_at > first.expires_at
        await m.release_all()
        assert provider.held() == []

    asyncio.run(main())


@pytest.mark.parametrize("how", ["provider error", "stolen", "hangs"])
def test_a_lease_that_cannot_be_renewed_is_reported_lost(how: str) -> None:
    lost: list[tuple[str, Exception]] = []

    async def main() -> None:
        provider = Flaky()
        # Renewed every 0.1 s, run out after 0.3 s: a loaded machine (the coverage run on two
        # shared cores) can delay a 20 ms renewal past a 60 ms lease, which then reports the
        # local deadline instead of what this test provokes.
        m = manager(provider, lease=0.3, on_lost=lambda name, exc: lost.append((name, exc)))
        lease = (await m.acquire(["db", "web"]))[0]
        if how == "provider error":
            provider.renew_error = ConnectionError("redis down")
        elif how == "stolen":
            provider.release(lease)  # e.g. an operator cleared it, and another run took it
            provider.acquire("db", "run-thief", actor="mallory", lease=60)
        else:
            provider.hanging = True
        try:
            await _until(lambda: bool(lost))
        finally:
            provider.hang.set()
        assert m.lease_of("db") is None
        assert isinstance(m.lost("db"), LeaseLost)
        await m.release_all()

    asyncio.run(main())
    name, exc = lost[0]
    assert name == "db" and isinstance(exc, LeaseLost)
    if how == "provider error":
        assert "redis down" in str(exc)
    elif how == "stolen":
        assert "'db'" in str(exc) and "lost" in str(exc)
    else:
        assert "not answering" in str(exc)


def test_extend_keeps_a_paused_runs_lock_past_the_process() -> None:
    async def main() -> None:
        now = ManualTime()
        provider = MemoryLocks(now=now)
        m = manager(provider, lease=30)
        (lease,) = await m.acquire(["web-prod"])
        (extended,) = await m.extend(["web-prod"], 86400)
        assert extended.token == lease.token
        assert extended.expires_at == pytest.approx(now() + 86400)
        await m.aclose()  # the paused process exits without releasing
        now.advance(3600)
        holder = provider.holder("web-prod")
        assert holder is not None and holder.owner == "run-1"

        # `runbook resume` in another process: same run id, same lock and token.
        resumed = manager(provider, lease=30)
        (again,) = await resumed.acquire(["web-prod"])
        assert again.token == lease.token
        await resumed.release_all()
        assert provider.holder("web-prod") is None

    asyncio.run(main())


def test_extend_refuses_locks_not_held_or_lost() -> None:
    async def main() -> None:
        now = ManualTime()
        provider = MemoryLocks(now=now)
        m = manager(provider, lease=30)
        with pytest.raises(LockError, match="not held by run run-1"):
            await m.extend(["web-prod"], 3600)
        await m.acquire(["web-prod"])
        now.advance(31)
        provider.acquire("web-prod", "run-2", actor="bob", lease=60)
        with pytest.raises(LeaseLost, match="'web-prod'"):
            await m.extend(["web-prod"], 3600)
        assert m.lease_of("web-prod") is None
        await m.aclose()

    asyncio.run(main())


def test_extended_leases_are_renewed_with_their_longer_length() -> None:
    async def main() -> None:
        provider = Flaky()
        m = manager(provider, lease=0.05)
        await m.acquire(["db"])
        await m.extend(["db"], 3600)
        await _until(lambda: len(provider.renewals) >= 3)
        assert set(provider.renewals) == {3600}
        await m.release_all()

    asyncio.run(main())


def test_a_lease_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        manager(MemoryLocks(), lease=0)
