"""``memory://``: a traffic router in a dict, plus the weight rules every built-in router shares.

Weights are integer percentages per target that sum to 100, so "5% to the canary" means the same
thing to every router and a strategy bug (weights summing to 105) fails loudly at the router
instead of silently skewing traffic.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from runbook.errors import WeightsError

_SHARED: dict[str, MemoryRouter] = {}
_SHARED_LOCK = threading.Lock()


def check_weights(service: str, weights: Mapping[str, int]) -> dict[str, int]:
    """Validate and copy a weight map: non-empty, non-negative integers summing to 100."""
    if not isinstance(service, str) or not service:
        raise WeightsError(f"service must be a non-empty string, got {service!r}")
    if not weights:
        raise WeightsError(f"weights for {service!r} are empty")
    out: dict[str, int] = {}
    for target, weight in weights.items():
        if not isinstance(target, str) or not target:
            raise WeightsError(f"target names must be non-empty strings, got {target!r}")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise WeightsError(
                f"weight of {service}/{target} must be an integer >= 0, got {weight!r}"
            )
        out[target] = weight
    total = sum(out.values())
    if total != 100:
        raise WeightsError(f"weights for {service!r} must sum to 100, got {total}: {out}")
    return out


def switched(current: Mapping[str, int], to: str) -> dict[str, int]:
    """All traffic to ``to``; every other known target stays listed, at 0."""
    if not isinstance(to, str) or not to:
        raise WeightsError(f"switch target must be a non-empty string, got {to!r}")
    out = dict.fromkeys(current, 0)
    out[to] = 100
    return out


def active_of(weights: Mapping[str, int]) -> str | None:
    """The target with the most weight; ties go to the first name in sorted order, so the answer
    does not depend on insertion order. None when nothing has weight."""
    if not weights or max(weights.values()) <= 0:
        return None
    top = max(weights.values())
    return min(target for target, weight in weights.items() if weight == top)


class MemoryRouter:
    """Weights in memory. ``memory://NAME`` is shared by every opener of the same name in this
    process (two ``Runner`` objects of one test see the same traffic); ``memory://`` is private.
    """

    def __init__(
        self, url: str = "memory://", weights: Mapping[str, Mapping[str, int]] | None = None
    ) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._weights: dict[str, dict[str, int]] = {}
        for service, table in (weights or {}).items():
            self._weights[service] = check_weights(service, table)

    @classmethod
    def open(cls, url: str, **_: object) -> MemoryRouter:
        name = url.removeprefix("memory://")
        if not name:
            return cls(url)
        with _SHARED_LOCK:
            return _SHARED.setdefault(name, cls(url))

    def set_weights(self, service: str, weights: dict[str, int]) -> None:
        table = check_weights(service, weights)
        with self._lock:
            self._weights[service] = table

    def weights(self, service: str) -> dict[str, int]:
        with self._lock:
            return dict(self._weights.get(service, {}))

    def switch(self, service: str, to: str) -> None:
        with self._lock:
            self._weights[service] = switched(self._weights.get(service, {}), to)

    def active(self, service: str) -> str | None:
        with self._lock:
            return active_of(self._weights.get(service, {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
