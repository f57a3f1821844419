"""Waiting for locks, keeping their leases alive, and noticing when one is lost.

Providers answer at once; this module adds what every provider needs the same way: a global
acquisition order (sorted names) so two runs never deadlock, waiting with capped exponential
backoff up to ``--lock-timeout`` (through the run's clock, so tests wait in no time), progress
while waiting, re-entrancy per run, and a background task that renews every held lease at a third
of its length and reports a lease it could not renew before it ran out.

A lease is also judged locally, in real time: it is good until the moment its last successful
acquire or renewal was *sent* plus its length. Once that moment passes (the process was frozen,
the loop was blocked) the lease counts as lost even if nobody noticed yet, because another run
may hold the lock by now: ``check`` reports it, the keeper does not renew it (its token may have
been reissued), and ``release`` does not report it as released (that release would come after
the next holder's).

That real time is one object, the ``lease_clock`` (``RealTime`` unless a test passes its own), so a
test can drive renewals, hangs and local deadlines with a fake one instead of waiting for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from runbook import backoff as _backoff
from runbook.errors import LeaseLost, LockError, LockHeld
from runbook.locks.base import Lease, LockProvider

DEFAULT_LEASE = 30.0
_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0
_WAIT_REPORT_EVERY = 1.0


def monotonic() -> float:
    """Real monotonic time, even under a test's fake clock (freezegun patches ``time.monotonic``
    but not ``clock_gettime``): a lease runs out in real time at the provider."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


T = TypeVar("T")


class LeaseClock(Protocol):
    """The time leases are judged and renewed by: real time (``RealTime``) outside tests."""

    def monotonic(self) -> float:
        """Seconds on a scale that never goes back: when a lease was sent, when it runs out."""
        ...

    async def asleep(self, seconds: float) -> None:
        """The keeper's wait between two renewals."""
        ...

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        """``awaitable``'s result, or ``TimeoutError`` once ``timeout`` seconds have passed."""
        ...


class RealTime:
    """Real time, whatever clock the runbook's own waits use: a lease runs out in real time at
    the provider."""

    def monotonic(self) -> float:
        return monotonic()

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(awaitable, timeout=timeout)


OnLost = Callable[[str, Exception], None]
OnWait = Callable[[str, Lease, float], None]


def since(lease: Lease) -> str:
    """When the lease was taken, as the ISO-8601 UTC string used in messages."""
    return datetime.fromtimestamp(lease.acquired_at, UTC).isoformat(timespec="seconds")


class LockManager:
    """The locks of one run (``owner`` = its run id), for one event loop."""

    def __init__(
        self,
        provider: LockProvider,
        *,
        clock: Any,
        owner: str,
        actor: str,
        lease: float = DEFAULT_LEASE,
        timeout: float = 0.0,
        on_lost: OnLost | None = None,
        on_wait: OnWait | None = None,
        rng: random.Random | None = None,
        holder_status: Callable[[str], str | None] | None = None,
        lease_clock: LeaseClock | None = None,
    ) -> None:
        if lease <= 0:
            raise ValueError(f"lock lease must be positive, got {lease!r}")
        self.provider = provider
        self.clock = clock
        self.owner = owner
        self.actor = actor
        self.lease = lease
        self.timeout = max(0.0, timeout)
        self.on_lost = on_lost
        self.on_wait = on_wait
        # The holder run's status (from the run store), so "held" can say "paused: cancel it".
        self.holder_status = holder_status
        # Not ``clock``: under a test's fake run clock, leases still run out in real time.
        self.lease_clock: LeaseClock = lease_clock or RealTime()
        self._rng = rng or random.Random()
        self._held: dict[str, Lease] = {}
        self._refs: dict[str, int] = {}
        self._length: dict[str, float] = {}  # lease length per name (extend() makes it longer)
        self._lost: dict[str, Exception] = {}
        self._valid_until: dict[str, float] = {}  # real monotonic time the lease runs out
        self._keeper: asyncio.Task[None] | None = None
        # Per lease: a keeper renewal must not undo an extend() (nor one lease's renewal wait
        # for another's: each round renews every lease at once).
        self._renewing: dict[str, asyncio.Lock] = {}

    def lease_of(self, name: str) -> Lease | None:
        return self._held.get(name)

    def lost(self, name: str) -> Exception | None:
        return self._lost.get(name)

    def held(self) -> list[Lease]:
        """The leases this run holds now, by name (a lost lease is no longer among them)."""
        return [self._held[name] for name in sorted(self._held)]

    async def acquire(self, names: Iterable[str]) -> list[Lease]:
        """Acquire all ``names`` in sorted order, or none of them (raise ``LockHeld``)."""
        wanted = sorted(set(names))
        taken: list[str] = []
        try:
            for name in wanted:
                await self._acquire_one(name)
                taken.append(name)
        except BaseException:
            await self.release(taken)
            raise
        self._ensure_keeper()
        return [self._held[n] for n in wanted]

    async def _acquire_one(self, name: str) -> Lease:
        if name in self._held:
            self._refs[name] += 1
            return self._held[name]
        started = self.clock.monotonic()
        deadline = started + self.timeout
        waits = 0
        reported: float | None = None
        free_retry = True
        while True:
            sent = self.lease_clock.monotonic()
            lease = await self._call(
                self.provider.acquire, name, self.owner, actor=self.actor, lease=self.lease
            )
            if lease is not None:
                self._held[name] = lease
                self._refs[name] = 1
                self._length[name] = self.lease
                self._valid_until[name] = sent + self.lease
                self._lost.pop(name, None)
                return lease
            now = self.clock.monotonic()
            remaining = deadline - now
            report = self.on_wait is not None and (
                reported is None or now - reported >= _WAIT_REPORT_EVERY
            )
            if remaining <= 0 or report:
                holder = await self._call(self.provider.holder, name)
                if holder is None and free_retry:
                    free_retry = False
                    continue  # released between the two calls: try again at once
                if holder is None:
                    holder = Lease(name=name, owner="", token=0)
                if remaining <= 0:
                    raise LockHeld(
                        name,
                        holder.owner or None,
                        holder.actor or None,
                        since(holder) if holder.owner else None,
                        self._status_of(holder.owner),
                    )
                reported = now
                self._report_wait(name, holder, now - started)
            waits += 1
            delay = _backoff.delay(waits, _FIRST_DELAY, _MAX_DELAY, self._rng)
            await self.clock.asleep(min(remaining, delay))

    def _status_of(self, run_id: str) -> str | None:
        if not run_id or self.holder_status is None:
            return None
        try:
            return self.holder_status(run_id)
        except Exception:  # a message detail must never turn "held" into another error
            return None

    def _report_wait(self, name: str, holder: Lease, waited: float) -> None:
        assert self.on_wait is not None
        with contextlib.suppress(Exception):  # progress output must never break acquisition
            self.on_wait(name, holder, waited)

    async def extend(self, names: Iterable[str], seconds: float) -> list[Lease]:
        """Renew these held leases once to ``seconds`` and keep them that long from now on.

        For a run that pauses (approval gate) and whose process exits: its run lock must outlive
        the process until ``resume`` re-acquires it under the same run id (re-entrant at the
        provider, same fencing token). Raises ``LeaseLost`` if a lease is already gone.
        """
        if seconds <= 0:
            raise ValueError(f"lease extension must be positive, got {seconds!r}")
        extended = []
        for name in sorted(set(names)):
            async with self._guard(name):  # after its renewal in flight, which may have lost it
                lease = self._held.get(name)
                if lease is None:
                    if name in self._lost:
                        raise self._lost[name]
                    raise LockError(f"lock {name!r} is not held by run {self.owner}")
                if (lost := self.check([name])) is not None:
                    raise lost
                sent = self.lease_clock.monotonic()
                try:
                    renewed = await self._call(self.provider.renew, lease, seconds)
                except Exception as exc:
                    self._mark_lost(name, exc)
                    raise self._lost[name] from None
                self._held[name] = renewed
                self._length[name] = seconds
                self._valid_until[name] = sent + seconds
            extended.append(renewed)
        return extended

    async def release(self, names: Iterable[str]) -> list[Lease]:
        """Drop one reference to each name; release the lock when the last one goes."""
        released = []
        for name in sorted(set(names), reverse=True):
            if name not in self._held:
                continue
            self._refs[name] -= 1
            if self._refs[name] > 0:
                continue
            if self.check([name]) is not None:
                continue  # ran out while held: not ours to release (nor to report released)
            lease = self._forget(name)
            # A provider that is down cannot be told; the lease then simply runs out.
            with contextlib.suppress(Exception):
                await self._call(self.provider.release, lease)
            released.append(lease)
        if not self._held:
            await self._stop_keeper()
        return released

    async def release_all(self) -> list[Lease]:
        for name in self._refs:
            self._refs[name] = 1
        return await self.release(list(self._held))

    async def aclose(self) -> None:
        """Stop renewing without releasing (a paused run's extended leases stay)."""
        await self._stop_keeper()

    def check(self, names: Iterable[str | None]) -> LeaseLost | None:
        """The loss of any of these leases (held by this run), or None while all are good.

        A lease past its local deadline is lost now, even before a renewal fails.
        """
        now = None
        for name in names:
            if name is None:
                continue
            lost = self._lost.get(name)
            if lost is not None:
                return lost if isinstance(lost, LeaseLost) else LeaseLost(str(lost))
            until = self._valid_until.get(name)
            if name in self._held and until is not None:
                now = self.lease_clock.monotonic() if now is None else now
                if now >= until:
                    self._mark_lost(
                        name,
                        LeaseLost(
                            f"lease on lock {name!r} ran out {now - until:.1f}s ago before it "
                            "could be renewed (was this process paused or blocked?); another "
                            "run may hold the lock now"
                        ),
                    )
                    return self._lost[name]  # type: ignore[return-value]
        return None

    # -- internals --------------------------------------------------------------------------

    async def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # Providers do blocking I/O (flock, SQLite, network): keep it off the event loop.
        return await asyncio.to_thread(func, *args, **kwargs)

    def _forget(self, name: str) -> Lease:
        self._refs.pop(name, None)
        self._length.pop(name, None)
        self._valid_until.pop(name, None)
        return self._held.pop(name)

    def _mark_lost(self, name: str, exc: Exception) -> None:
        lost = (
            exc
            if isinstance(exc, LeaseLost)
            else LeaseLost(
                f"lease on lock {name!r} could not be renewed: {type(exc).__name__}: {exc}"
            )
        )
        self._lost[name] = lost
        if name in self._held:
            self._forget(name)

    def _ensure_keeper(self) -> None:
        if self._held and (self._keeper is None or self._keeper.done()):
            self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _stop_keeper(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is None or keeper is asyncio.current_task():
            return
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper

    async def _keep(self) -> None:
        # The lease clock on purpose (real time): the lease runs out in real time at the provider,
        # whatever clock the runbook's own waits use. Every held lease is renewed at once, each
        # round a third of a lease after the last began: a renewal that hangs (a provider not
        # answering) loses its own lease at worst, never delays another's past its deadline.
        interval = max(self.lease / 3.0, 0.01)
        wait = interval
        while self._held:
            if wait > 0:
                await self.lease_clock.asleep(wait)
            began = self.lease_clock.monotonic()
            names = list(self._held)
            await asyncio.gather(*(self._renew_guarded(name, interval) for name in names))
            wait = interval - (self.lease_clock.monotonic() - began)  # behind: the next one now

    def _guard(self, name: str) -> asyncio.Lock:
        guard = self._renewing.get(name)
        if guard is None:
            guard = self._renewing[name] = asyncio.Lock()
        return guard

    async def _renew_guarded(self, name: str, interval: float) -> None:
        async with self._guard(name):
            await self._renew_one(name, interval)

    async def _renew_one(self, name: str, interval: float) -> None:
        lease = self._held.get(name)
        if lease is None:
            return
        length = self._length.get(name, self.lease)
        if (lost := self.check([name])) is not None:  # too late: its token may be reissued
            self._report_lost(name, lost)
            return
        sent = self.lease_clock.monotonic()
        try:
            # A renewal that hangs past what is left of the lease is a lost lease too.
            renewed = await self.lease_clock.wait_for(
                self._call(self.provider.renew, lease, length), timeout=max(length - interval, 0.01)
            )
        except Exception as exc:
            if self._held.get(name) is not lease:
                return  # released while we were renewing: not a loss
            if isinstance(exc, TimeoutError):
                exc = LeaseLost(
                    f"lease on lock {name!r} could not be renewed within "
                    f"{length - interval:g}s (lock provider not answering)"
                )
            self._mark_lost(name, exc)
            self._report_lost(name, self._lost[name])
            return
        if self._held.get(name) is lease:
            self._held[name] = renewed
            self._valid_until[name] = sent + length

    def _report_lost(self, name: str, exc: Exception) -> None:
        if self.on_lost:
            try:
                self.on_lost(name, exc)
            except Exception:  # the callback must not stop the other renewals
                pass
