"""The lock provider contract as reusable checks, for the built-in providers and for plugins.

Each check is a plain function ``check(open_provider, time)``:

* ``open_provider()`` returns a provider; every call must return a *new instance* over the same
  storage when the provider has storage (that is what a new process sees), so tokens can be
  checked across instances. A purely in-process provider may return the same instance.
* ``time`` moves the provider's clock: ``ManualTime`` for providers that take an injectable
  ``now`` (no waiting at all), ``RealTime`` for providers whose time is a server's (Redis key
  expiry, PostgreSQL ``now()``), where ``advance`` really sleeps the few tenths of a second the
  short leases last.

A plugin's tests run them all in a few lines::

    import pytest
    from runbook.testing.lock_contract import CHECKS, RealTime

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_contract(check, redis_url):
        check(lambda: RedisLocks.open(redis_url), RealTime())

Lock names carry a random prefix, so the checks can share a server with other tests and runs.
"""

from __future__ import annotations

import itertools
import time as _time
import uuid
from collections.abc import Callable
from typing import Protocol

from runbook.errors import LeaseLost
from runbook.locks.base import Lease, LockProvider

LONG = 60.0  # a lease that never runs out during a check
SHORT = 0.3  # a lease a check lets run out
SLACK = 2.0  # tolerance on server-side timestamps (RealTime providers)

OpenProvider = Callable[[], LockProvider]


class Time(Protocol):
    def __call__(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


class ManualTime:
    """A ``now`` to inject into a provider: starts at the real time, moves only by ``advance``."""

    def __init__(self, start: float | None = None) -> None:
        self.value = _time.time() if start is None else start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


class RealTime:
    """For providers that keep time themselves: ``advance`` sleeps (the leases are short)."""

    def __call__(self) -> float:
        return _time.time()

    def advance(self, seconds: float) -> None:
        _time.sleep(seconds)


def _names(count: int = 1) -> list[str]:
    prefix = f"contract-{uuid.uuid4().hex[:10]}"
    return [f"{prefix}:{i}" for i in range(count)]


def _close(*providers: LockProvider) -> None:
    for provider in providers:
        provider.close()


def _expire(time: Time) -> None:
    time.advance(SHORT + 0.2)


def check_acquire_holder_release(open_provider: OpenProvider, time: Time) -> None:
    p = open_provider()
    try:
        (name,) = _names()
        assert p.holder(name) is None
        start = time()
        lease = p.acquire(name, "run-a", actor="alice", lease=LONG)
        assert isinstance(lease, Lease), f"acquire of a free lock returned {lease!r}"
        assert (lease.name, lease.owner, lease.actor) == (name, "run-a", "alice")
        assert lease.token > 0
        assert abs(lease.acquired_at - start) <= SLACK
        assert abs(lease.expires_at - (start + LONG)) <= SLACK
        holder = p.holder(name)
        assert holder is not None and (holder.owner, holder.token) == ("run-a", lease.token)
        assert holder.actor == "alice"
        p.release(lease)
        assert p.holder(name) is None
        other = p.acquire(name, "run-b", actor="bob", lease=LONG)
        assert other is not None and other.owner == "run-b"
        p.release(other)
    finally:
        _close(p)


def check_exclusive_between_owners(open_provider: OpenProvider, time: Time) -> None:
    p, q = open_provider(), open_provider()
    try:
        (name,) = _names()
        lease = p.acquire(name, "run-a", actor="alice", lease=LONG)
        assert lease is not None
        assert q.acquire(name, "run-b", actor="bob", lease=LONG) is None
        assert p.acquire(name, "run-b", actor="bob", lease=LONG) is None
        holder = q.holder(name)
        assert holder is not None and holder.owner == "run-a"
        p.release(lease)
    finally:
        _close(p, q)


def check_reentrant_per_owner(open_provider: OpenProvider, time: Time) -> None:
    p, q = open_provider(), open_provider()
    try:
        (name,) = _names()
        first = p.acquire(name, "run-a", actor="alice", lease=SHORT)
        assert first is not None
        again = q.acquire(name, "run-a", actor="alice", lease=LONG)  # e.g. a resumed run
        assert again is not None, "the same owner must get its lock back (re-entrant)"
        assert again.token == first.token, "re-acquiring must not issue a new fencing token"
        assert again.expires_at > first.expires_at, "re-acquiring must extend the lease"
        _expire(time)  # past the first, short lease: the extension must hold
        holder = p.holder(name)
        assert holder is not None and holder.owner == "run-a"
        assert p.acquire(name, "run-b", actor="bob", lease=LONG) is None
        p.release(again)
        assert p.holder(name) is None
    finally:
        _close(p, q)


def check_expiry_makes_reclaimable(open_provider: OpenProvider, time: Time) -> None:
    p, q = open_provider(), open_provider()
    try:
        (name,) = _names()
        old = p.acquire(name, "run-dead", actor="alice", lease=SHORT)
        assert old is not None
        _expire(time)
        assert p.holder(name) is None, "an expired lease must not be reported as held"
        new = q.acquire(name, "run-b", actor="bob", lease=LONG)
        assert new is not None, "an expired lease must be reclaimable"
        assert new.token > old.token
        q.release(new)
    finally:
        _close(p, q)


def check_renew(open_provider: OpenProvider, time: Time) -> None:
    p = open_provider()
    try:
        (name,) = _names()
        lease = p.acquire(name, "run-a", actor="alice", lease=SHORT)
        assert lease is not None
        renewed = p.renew(lease, LONG)
        assert renewed.token == lease.token and renewed.owner == "run-a"
        assert renewed.expires_at >= time() + LONG - SLACK
        _expire(time)
        holder = p.holder(name)
        assert holder is not None and holder.owner == "run-a", "renew must extend the lease"
        forged = lease.evolve(owner="run-b")
        try:
            p.renew(forged, LONG)
        except LeaseLost:
            pass
        else:
            raise AssertionError("renew by a run that does not hold the lock must raise LeaseLost")
        p.release(renewed)
    finally:
        _close(p)


def check_renew_after_takeover_raises(open_provider: OpenProvider, time: Time) -> None:
    p, q = open_provider(), open_provider()
    try:
        (name,) = _names()
        old = p.acquire(name, "run-a", actor="alice", lease=SHORT)
        assert old is not None
        _expire(time)
        new = q.acquire(name, "run-b", actor="bob", lease=LONG)
        assert new is not None
        try:
            p.renew(old, LONG)
        except LeaseLost:
            pass
        else:
            raise AssertionError("renewing a lease taken over by another run must raise LeaseLost")
        holder = q.holder(name)
        assert holder is not None and (holder.owner, holder.token) == ("run-b", new.token)
        q.release(new)
    finally:
        _close(p, q)


def check_tokens_strictly_increase(open_provider: OpenProvider, time: Time) -> None:
    (name,) = _names()
    tokens: list[int] = []
    for cycle in range(3):  # a new instance per cycle: what a new process sees
        p = open_provider()
        try:
            for i in range(3):
                lease = p.acquire(name, f"run-{cycle}-{i}", actor="alice", lease=LONG)
                assert lease is not None
                tokens.append(lease.token)
                p.release(lease)
            lease = p.acquire(name, f"run-{cycle}-expired", actor="alice", lease=SHORT)
            assert lease is not None
            tokens.append(lease.token)
            _expire(time)  # not released: expiry must not reset the counter either
        finally:
            _close(p)
    assert all(a < b for a, b in itertools.pairwise(tokens)), (
        f"fencing tokens must strictly increase, got {tokens}"
    )


def check_held_lists_only_live(open_provider: OpenProvider, time: Time) -> None:
    p = open_provider()
    try:
        a, b, c = _names(3)
        la = p.acquire(a, "run-a", actor="alice", lease=LONG)
        lb = p.acquire(b, "run-b", actor="bob", lease=SHORT)
        lc = p.acquire(c, "run-c", actor="carol", lease=LONG)
        assert la and lb and lc
        mine = {a, b, c}
        assert {lease.name for lease in p.held() if lease.name in mine} == mine
        _expire(time)
        p.release(lc)
        live = [lease for lease in p.held() if lease.name in mine]
        assert [(lease.name, lease.owner, lease.token) for lease in live] == [
            (a, "run-a", la.token)
        ]
        p.release(la)
        assert not [lease for lease in p.held() if lease.name in mine]
    finally:
        _close(p)


def check_release_of_lost_lease_is_noop(open_provider: OpenProvider, time: Time) -> None:
    p, q = open_provider(), open_provider()
    try:
        (name,) = _names()
        old = p.acquire(name, "run-a", actor="alice", lease=SHORT)
        assert old is not None
        _expire(time)
        new = q.acquire(name, "run-b", actor="bob", lease=LONG)
        assert new is not None
        p.release(old)  # must neither raise nor free the new holder's lock
        holder = q.holder(name)
        assert holder is not None and (holder.owner, holder.token) == ("run-b", new.token)
        q.release(new)
        q.release(new)  # twice: still nothing to undo
        assert q.holder(name) is None
    finally:
        _close(p, q)


CHECKS: list[Callable[[OpenProvider, Time], None]] = [
    check_acquire_holder_release,
    check_exclusive_between_owners,
    check_reentrant_per_owner,
    check_expiry_makes_reclaimable,
    check_renew,
    check_renew_after_takeover_raises,
    check_tokens_strictly_increase,
    check_held_lists_only_live,
    check_release_of_lost_lease_is_noop,
]


def run_all(open_provider: OpenProvider, time: Time) -> None:
    """Every check in turn; the first failure raises ``AssertionError`` naming what broke."""
    for check in CHECKS:
        check(open_provider, time)
