"""LockManager: ordering, waiting through the clock, progress, renewal, loss, extension.

Nothing here waits in real time: the run's waits go through ``RunClock``, and lease time (renewals,
hung renewals, local deadlines) through a ``SteppedClock`` the test moves by hand.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from runbook.errors import LeaseLost, LockError, LockHeld
from runbook.locks.base import Lease
from runbook.locks.manager import LockManager, RealTime, monotonic
from runbook.locks.memory import MemoryLocks
from runbook.testing import FakeClock
from runbook.testing.lock_contract import ManualTime

T = TypeVar("T")
EPOCH = datetime(2026, 11, 23, 18, 0, tzinfo=UTC).timestamp()


class RunClock:
    """The run's clock: monotonic()/asleep() that advance instantly; records every sleep."""

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


class SteppedClock(FakeClock):
    """The project's ``FakeClock`` for a task that runs on its own (the lease keeper).

    ``FakeClock.asleep`` returns at once, so a background loop on it would spin. Here a wait ends
    only when the test moves time past it: ``asleep`` (the keeper's pause) and the timeout of
    ``wait_for`` (a renewal that hangs). ``await run(seconds)`` moves time on from one wait's end
    to the next and, after each, waits without sleeping until every task it woke is waiting on the
    clock again or has finished: when it returns, what those seconds did is done. ``advance`` jumps
    at once, as a frozen process sees time, and ``settle`` waits for the woken tasks.
    """

    def __init__(self) -> None:
        super().__init__(freeze=False)
        self._waits: list[tuple[float, asyncio.Future[None], asyncio.Task[Any] | None]] = []
        self._busy: set[asyncio.Task[Any]] = set()  # woken by the clock, not waiting again yet
        self._changed = asyncio.Event()

    @property
    def deadlines(self) -> list[float]:
        """When the waits not yet ended end, in order ([]: nothing runs on this clock any more)."""
        return sorted(when for when, fut, _ in self._waits if not fut.done())

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        task = asyncio.current_task()
        assert task is not None
        self._busy.discard(task)
        self._changed.set()
        await self._until(self.monotonic() + seconds, task)

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        inner = asyncio.ensure_future(awaitable)
        timer = asyncio.ensure_future(self._until(self.monotonic() + timeout, None))
        try:
            done, _ = await asyncio.wait({inner, timer}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            inner.cancel()
            timer.cancel()
            raise
        timer.cancel()
        if inner in done:
            return inner.result()
        inner.cancel()
        raise TimeoutError

    async def _until(self, when: float, task: asyncio.Task[Any] | None) -> None:
        wait = (when, asyncio.get_running_loop().create_future(), task)
        self._waits.append(wait)
        try:
            await wait[1]
        finally:
            self._waits.remove(wait)

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        for when, fut, task in list(self._waits):
            if when <= self.monotonic() + 1e-9 and not fut.done():
                fut.set_result(None)
                if task is not None:
                    self._busy.add(task)
                    task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._busy.discard(task)
        self._changed.set()

    async def settle(self) -> None:
        """Until every task the clock woke waits on it again or has ended (no sleeping)."""
        await asyncio.sleep(0)  # a task created just now (the keeper) starts waiting first
        async with asyncio.timeout(5):  # reached only by a test that is failing anyway
            while self._busy:
                self._changed.clear()
                await self._changed.wait()

    async def run(self, seconds: float) -> None:
        """Let ``seconds`` pass, every wait ending in its turn."""
        end = self.monotonic() + seconds
        await self.settle()
        while due := [w for w in self.deadlines if w <= end + 1e-9]:
            self.advance(max(0.0, min(due) - self.monotonic()))
            await self.settle()
        self.advance(end - self.monotonic())
        await self.settle()


class Flaky(MemoryLocks):
    """A memory provider on the lease clock's time whose renewals can fail or hang, by name."""

    def __init__(self, clock: SteppedClock) -> None:
        super().__init__(now=lambda: EPOCH + clock.monotonic())
        self.clock = clock
        self.errors: dict[str, Exception] = {}
        self.hang: set[str] = set()  # these renewals block until ``unhang`` is set
        self.entered = threading.Event()  # a renewal is blocked in ``hang``
        self.unhang = threading.Event()
        self.renewals: list[tuple[str, float, float]] = []  # (name, seconds, lease-clock time)

    def renew(self, lease: Lease, seconds: float) -> Lease:
        self.renewals.append((lease.name, seconds, self.clock.monotonic()))
        error = self.errors.get(lease.name)
        renewed = None if error else super().renew(lease, seconds)
        if lease.name in self.hang:
            self.entered.set()
            self.unhang.wait(10)
        if error:
            raise error
        assert renewed is not None
        return renewed

    def renewed(self, name: str) -> list[float]:
        """When the provider was asked to renew ``name`` (failed tries too), on the lease clock."""
        return [at for n, _, at in self.renewals if n == name]


def manager(provider, owner="run-1", actor="alice", **kwargs) -> LockManager:
    kwargs.setdefault("clock", RunClock())
    kwargs.setdefault("rng", random.Random(7))
    kwargs.setdefault("lease_clock", getattr(provider, "clock", None) or SteppedClock())
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
    clock = RunClock()
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
    clock = RunClock()
    waits: list[object] = []
    m = manager(provider, owner="run-2", clock=clock, on_wait=lambda *a: waits.append(a))
    with pytest.raises(LockHeld, match=r"held by run run-1 \(alice\)"):
        asyncio.run(m.acquire(["db"]))
    assert clock.sleeps == [] and waits == []


def test_a_wait_ends_when_the_holder_releases() -> None:
    provider = MemoryLocks(now=ManualTime())
    held = provider.acquire("db", "run-1", actor="alice", lease=60)
    assert held is not None
    clock = RunClock(on_sleep=lambda t: provider.release(held) if t > 1003 else None)
    m = manager(provider, owner="run-2", clock=clock, timeout=60)

    async def main() -> Lease:
        (lease,) = await m.acquire(["db"])
        await m.release_all()
        return lease

    lease = asyncio.run(main())
    assert lease.owner == "run-2" and lease.token == held.token + 1
    assert 3 < sum(clock.sleeps) < 10


def test_leases_are_renewed_every_third_of_their_length_while_held_and_not_after() -> None:
    async def main() -> None:
        clock = SteppedClock()
        provider = Flaky(clock)
        m = manager(provider, lease=30)
        (first,) = await m.acquire(["db"])
        await clock.run(95)  # three times the lease
        assert provider.renewed("db") == [10, 20, 30, 40, 50, 60, 70, 80, 90]
        assert {seconds for _, seconds, _ in provider.renewals} == {30}
        holder = provider.holder("db")  # the provider still gives it to us, 65 s after it began
        assert holder is not None and holder.owner == "run-1" and holder.token == first.token
        assert m.lease_of("db") == holder and holder.expires_at == EPOCH + 90 + 30
        assert m.check(["db"]) is None

        await m.release_all()  # the run ends: released, and the keeper stops
        assert provider.held() == [] and m.held() == []
        assert clock.deadlines == []
        await clock.run(600)
        assert len(provider.renewals) == 9

    asyncio.run(main())


@pytest.mark.parametrize("how", ["provider error", "stolen"])
def test_a_lease_that_cannot_be_renewed_is_reported_lost_and_the_others_kept(how: str) -> None:
    lost: list[tuple[str, Exception]] = []

    async def main() -> None:
        clock = SteppedClock()
        provider = Flaky(clock)
        m = manager(provider, lease=30, on_lost=lambda name, exc: lost.append((name, exc)))
        lease = (await m.acquire(["db", "web"]))[0]
        await clock.run(15)
        assert provider.renewed("db") == [10] and lost == []
        if how == "provider error":
            provider.errors["db"] = ConnectionError("redis down")
        else:
            provider.release(lease)  # e.g. an operator cleared it, and another run took it
            provider.acquire("db", "run-thief", actor="mallory", lease=60)
        await clock.run(5)  # t=20: the second renewal fails
        assert [name for name, _ in lost] == ["db"]
        assert m.lease_of("db") is None and m.held() == [m.lease_of("web")]
        assert isinstance(m.lost("db"), LeaseLost) and m.check(["db"]) is m.lost("db")

        await clock.run(60)  # web is still renewed; db never again (its token may be reissued)
        assert provider.renewed("db") == [10, 20] and len(lost) == 1
        assert provider.renewed("web") == [10, 20, 30, 40, 50, 60, 70, 80]
        web = provider.holder("web")
        assert web is not None and web.owner == "run-1" and m.lease_of("web") == web
        await m.release_all()
        assert provider.holder("web") is None

    asyncio.run(main())
    name, exc = lost[0]
    assert name == "db" and isinstance(exc, LeaseLost)
    if how == "provider error":
        assert str(exc) == "lease on lock 'db' could not be renewed: ConnectionError: redis down"
    else:
        assert "'db'" in str(exc) and "lost" in str(exc)


def test_a_renewal_that_hangs_loses_its_own_lease_and_no_other() -> None:
    """db's renewal hangs (its provider stops answering): db is lost once what was left of its
    lease has passed, and web, renewed in the same round, is kept. The keeper used to renew one
    lease at a time, so web waited behind db until its own lease ran out and was lost too."""
    lost: list[tuple[str, Exception]] = []

    async def main() -> None:
        clock = SteppedClock()
        provider = Flaky(clock)
        m = manager(provider, lease=30, on_lost=lambda name, exc: lost.append((name, exc)))
        await m.acquire(["db", "web"])
        await clock.run(15)
        provider.hang.add("db")
        web = m.lease_of("web")
        try:
            clock.advance(5)  # t=20: the keeper renews both at once; db hangs
            assert await asyncio.to_thread(provider.entered.wait, 5)
            # web's renewal runs on a worker thread of its own: its result reaches the loop
            # when that thread is scheduled (late on a loaded machine), and time must not
            # move past its timeout before then (a barrier on state, not a sleep).
            async with asyncio.timeout(5):
                while m.lease_of("web") is web:
                    await asyncio.sleep(0)
            # It may take what is left of the lease after it was sent: 20 s, to t=40.
            assert 40 in clock.deadlines and lost == [] and m.lease_of("db") is not None
            clock.advance(20)  # t=40
            await clock.settle()
        finally:
            provider.unhang.set()
        assert [name for name, _ in lost] == ["db"] and m.lease_of("db") is None
        # web was renewed at t=20 beside db (else its lease would have run out at t=40); the
        # round that hung ended at t=40, behind its cadence, so the next one began at once.
        assert provider.renewed("web") == [10, 20, 40] and m.check(["web"]) is None
        await clock.run(20)
        assert provider.renewed("web") == [10, 20, 40, 50, 60]
        assert m.held() == [m.lease_of("web")] and m.check(["web"]) is None
        await m.release_all()
        assert clock.deadlines == []

    asyncio.run(main())
    assert [(name, str(exc)) for name, exc in lost] == [
        ("db", "lease on lock 'db' could not be renewed within 20s (lock provider not answering)"),
    ]


def test_a_lease_past_its_deadline_is_reported_lost_without_a_renewal() -> None:
    """The process was frozen (SIGSTOP, a blocked loop) past the lease: another run may hold the
    lock by now, so the keeper must not renew with a token that may have been reissued."""
    lost: list[tuple[str, Exception]] = []

    async def main() -> None:
        clock = SteppedClock()
        provider = Flaky(clock)
        m = manager(provider, lease=30, on_lost=lambda name, exc: lost.append((name, exc)))
        await m.acquire(["db"])
        await clock.run(25)
        assert provider.renewed("db") == [10, 20]
        clock.advance(51)  # frozen: the keeper wakes at t=76, its lease ran out at t=50
        await clock.settle()
        assert provider.renewed("db") == [10, 20]
        assert m.held() == [] and isinstance(m.lost("db"), LeaseLost)
        assert clock.deadlines == []  # nothing left to keep: the keeper ended
        assert await m.release_all() == []  # not ours to release any more

    asyncio.run(main())
    assert [(name, str(exc)) for name, exc in lost] == [
        (
            "db",
            "lease on lock 'db' ran out 26.0s ago before it could be renewed (was this process "
            "paused or blocked?); another run may hold the lock now",
        )
    ]


@pytest.mark.parametrize("renewal", ["succeeds", "fails"])
def test_a_lease_released_while_its_renewal_is_in_flight_is_neither_kept_nor_lost(
    renewal: str,
) -> None:
    lost: list[tuple[str, Exception]] = []

    async def main() -> None:
        clock = SteppedClock()
        provider = Flaky(clock)
        m = manager(provider, lease=30, on_lost=lambda name, exc: lost.append((name, exc)))
        await m.acquire(["db", "web"])
        await clock.settle()  # the keeper waits for t=10
        provider.hang.add("db")
        if renewal == "fails":
            provider.errors["db"] = ConnectionError("redis down")
        clock.advance(10)
        try:
            assert await asyncio.to_thread(provider.entered.wait, 5)
            (released,) = await m.release(["db"])  # the step that held it ended meanwhile
            assert released.name == "db" and provider.holder("db") is None
        finally:
            provider.unhang.set()
        await clock.settle()
        assert m.lease_of("db") is None and m.lost("db") is None and lost == []
        assert [lease.name for lease in m.held()] == ["web"]
        assert provider.renewed("web") == [10]
        await m.release_all()

    asyncio.run(main())


@pytest.mark.parametrize("on_lost", ["none", "raises"])
def test_no_or_a_failing_loss_callback_does_not_stop_the_other_renewals(on_lost: str) -> None:
    calls: list[str] = []

    def report(name: str, exc: Exception) -> None:
        calls.append(name)
        raise RuntimeError("the callback broke")

    async def main() -> None:
        clock = SteppedClock()
        provider = Flaky(clock)
        m = manager(provider, lease=30, on_lost=report if on_lost == "raises" else None)
        await m.acquire(["db", "web"])
        provider.errors["db"] = ConnectionError("redis down")
        await clock.run(35)
        assert isinstance(m.lost("db"), LeaseLost)
        assert provider.renewed("web") == [10, 20, 30]
        await m.release_all()

    asyncio.run(main())
    assert calls == (["db"] if on_lost == "raises" else [])


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
        clock = SteppedClock()
        provider = Flaky(clock)
        m = manager(provider, lease=30)
        await m.acquire(["db"])
        await m.extend(["db"], 3600)
        await clock.run(35)
        assert provider.renewals == [("db", 3600, t) for t in (0, 10, 20, 30)]  # extend, keeper
        lease = m.lease_of("db")
        assert lease is not None and lease.expires_at == EPOCH + 30 + 3600
        await m.aclose()  # stops renewing without releasing (a paused run's extended lease)
        assert clock.deadlines == [] and provider.holder("db") == lease

    asyncio.run(main())


def test_real_time_is_the_default_lease_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """What LockManager uses outside tests: the real clock, asyncio's sleep and timeout."""
    slept: list[float] = []
    sleep = asyncio.sleep

    async def recorded(seconds: float, result: Any = None) -> Any:
        slept.append(seconds)
        return await sleep(0, result)

    async def main() -> None:
        m = LockManager(MemoryLocks(), clock=RunClock(), owner="run-1", actor="alice")
        real = m.lease_clock
        assert isinstance(real, RealTime)
        before = monotonic()
        assert before <= real.monotonic() <= monotonic()
        with monkeypatch.context() as patch:
            patch.setattr(asyncio, "sleep", recorded)
            await real.asleep(10)
        assert slept == [10]
        assert await real.wait_for(sleep(0, "renewed"), timeout=60) == "renewed"
        never = asyncio.ensure_future(real.wait_for(asyncio.Event().wait(), timeout=0))
        done, _ = await asyncio.wait({never}, timeout=5)  # the bound only a failing test reaches
        assert done == {never} and isinstance(never.exception(), TimeoutError)

    asyncio.run(main())


def test_a_lease_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        manager(MemoryLocks(), lease=0)
