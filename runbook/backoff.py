"""The one backoff formula: capped exponential with "equal jitter".

Every wait that retries (step retries, probes polling, lock waits, notification delivery) takes
its delay from here, so retry timing behaves the same everywhere and is tested once. The random
source is passed in, so a seeded ``Random`` makes delays reproducible in tests.
"""

from __future__ import annotations

from random import Random

# 2**64 seconds is already far past any cap; bounding the exponent keeps the float finite.
_MAX_EXPONENT = 64


def delay(attempt: int, base: float, cap: float, rng: Random | None = None) -> float:
    """The wait before retry number ``attempt`` (1 = the first retry).

    ``base * 2**(attempt-1)``, capped at ``cap``; with ``rng``, drawn uniformly from the upper
    half, ``[d/2, d]``, so concurrent retriers spread out but never wait less than half.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    full = min(cap, base * 2 ** min(attempt - 1, _MAX_EXPONENT))
    if rng is None:
        return full
    return jittered(full, rng.random())


def jittered(full: float, u: float) -> float:
    """``full`` spread over ``[full/2, full]`` by ``u`` in [0, 1): for a caller that draws ``u``
    itself (the coordinator: its driver's RNG, a Temporal workflow's deterministic one)."""
    return full / 2 + u * full / 2
