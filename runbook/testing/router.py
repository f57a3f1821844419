"""``FakeRouter``: an in-memory router that remembers every call, for asserting exact sequences.

::

    def test_abort(fake_router):
        fake_router.fail("set_weights", RuntimeError("mesh down"), after=2)
        ...
        assert fake_router.writes == [("set_weights", "web", {"canary": 5, "stable": 95}), ...]
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from runbook.routers.memory import MemoryRouter

Call = tuple[str, str, Any]

_WRITES = frozenset({"set_weights", "switch"})


class FakeRouter(MemoryRouter):
    """Weights in memory; ``history`` lists every call as ``(method, service, arg)``.

    ``arg`` is a copy of the weights for ``set_weights``, the target for ``switch`` and None for
    the reads (``weights``, ``active``). ``writes`` is the same list without the reads, which is
    what most tests want to compare. A failing call is recorded too, so a test sees that it was
    attempted.
    """

    def __init__(
        self, weights: Mapping[str, Mapping[str, int]] | None = None, url: str = "memory://fake"
    ) -> None:
        super().__init__(url, weights)
        self.history: list[Call] = []
        self._failures: dict[str, list[tuple[int, BaseException]]] = {}
        self._calls: dict[str, int] = {}
        self._guard = threading.Lock()

    def fail(self, method: str, error: BaseException, *, after: int = 0, times: int = 1) -> None:
        """Make ``method`` raise ``error``: after ``after`` successful calls, ``times`` times."""
        if method not in {"set_weights", "switch", "weights", "active"}:
            raise ValueError(f"FakeRouter has no method {method!r}")
        with self._guard:
            start = self._calls.get(method, 0) + after
            self._failures.setdefault(method, []).extend((start + i, error) for i in range(times))

    def _record(self, method: str, service: str, arg: Any) -> None:
        with self._guard:
            self.history.append((method, service, arg))
            index = self._calls.get(method, 0)
            self._calls[method] = index + 1
            for planned in self._failures.get(method, []):
                if planned[0] == index:
                    self._failures[method].remove(planned)
                    raise planned[1]

    @property
    def writes(self) -> list[Call]:
        """``history`` without the reads: the traffic changes a test usually compares."""
        return [call for call in self.history if call[0] in _WRITES]

    def set_weights(self, service: str, weights: dict[str, int]) -> None:
        """Recorded (a copy of ``weights``), then applied; may fail as ``fail`` scripted."""
        self._record("set_weights", service, dict(weights))
        super().set_weights(service, weights)

    def weights(self, service: str) -> dict[str, int]:
        """Recorded as a read; ``peek`` reads without recording."""
        self._record("weights", service, None)
        return super().weights(service)

    def switch(self, service: str, to: str) -> None:
        """Recorded, then all traffic of ``service`` goes to ``to``; may fail as scripted."""
        self._record("switch", service, to)
        super().switch(service, to)

    def active(self, service: str) -> str | None:
        """Recorded as a read: the target with the most weight (None: none has any)."""
        self._record("active", service, None)
        return super().active(service)

    def peek(self, service: str) -> dict[str, int]:
        """The current weights without recording a call (for assertions)."""
        return MemoryRouter.weights(self, service)
