"""The traffic router contract used by deployment strategies (DESIGN.md 6)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Router(Protocol):
    """Where traffic for a service goes: weights per target, or one active color.

    ``set_weights`` must be atomic: a reader never sees a half-written set of weights.
    """

    url: str

    def set_weights(self, service: str, weights: dict[str, int]) -> None:
        """Replace the service's weights as one change (a canary's shift)."""
        ...

    def weights(self, service: str) -> dict[str, int]:
        """The current weights by target; empty for a service never set."""
        ...

    def switch(self, service: str, to: str) -> None:
        """Send all traffic to ``to`` (weight 100, every other target 0)."""
        ...

    def active(self, service: str) -> str | None:
        """The target with the most weight, or None when the service has no weights yet."""
        ...
