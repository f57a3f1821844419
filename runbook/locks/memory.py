"""``memory://``: locks inside one process, for tests and single-process use."""

from __future__ import annotations

import threading
import time

from runbook.errors import LeaseLost
from runbook.locks.base import Lease
from runbook.locks.file import lost_message

_SHARED: dict[str, MemoryLocks] = {}
_SHARED_LOCK = threading.Lock()


class MemoryLocks:
    def __init__(self, url: str = "memory://", now=time.time) -> None:
        self.url = url
        self._now = now
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._tokens: dict[str, int] = {}

    @classmethod
    def open(cls, url: str) -> MemoryLocks:
        name = url.removeprefix("memory://")
        if not name:
            return cls(url)
        with _SHARED_LOCK:
            return _SHARED.setdefault(name, cls(url))

    def _live(self, name: str) -> Lease | None:
        lease = self._leases.get(name)
        if lease and lease.expires_at <= self._now():
            del self._leases[name]
            return None
        return lease

    def acquire(self, name: str, owner: str, *, actor: str, lease: float) -> Lease | None:
        with self._lock:
            current = self._live(name)
            now = self._now()
            if current is not None:
                if current.owner != owner:
                    return None
                renewed = current.evolve(expires_at=now + lease)
                self._leases[name] = renewed
                return renewed
            token = self._tokens.get(name, 0) + 1
            self._tokens[name] = token
            new = Lease(
                name=name,
                owner=owner,
                token=token,
                actor=actor,
                acquired_at=now,
                expires_at=now + lease,
            )
            self._leases[name] = new
            return new

    def renew(self, lease: Lease, seconds: float) -> Lease:
        with self._lock:
            current = self._live(lease.name)
            if current is None or current.owner != lease.owner or current.token != lease.token:
                raise LeaseLost(lost_message(lease, current))
            renewed = current.evolve(expires_at=self._now() + seconds)
            self._leases[lease.name] = renewed
            return renewed

    def release(self, lease: Lease) -> None:
        with self._lock:
            current = self._leases.get(lease.name)
            if current and current.owner == lease.owner and current.token == lease.token:
                del self._leases[lease.name]

    def holder(self, name: str) -> Lease | None:
        with self._lock:
            return self._live(name)

    def held(self) -> list[Lease]:
        with self._lock:
            return [lease for name in list(self._leases) if (lease := self._live(name))]

    def close(self) -> None:
        pass
