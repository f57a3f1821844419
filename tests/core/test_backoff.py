"""The one backoff formula every retrying wait uses."""

from __future__ import annotations

from random import Random

import pytest

from runbook import backoff


def test_doubles_from_the_base_and_stops_at_the_cap():
    assert [backoff.delay(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_equal_jitter_stays_in_the_upper_half_and_spreads():
    rng = Random(7)
    draws = [backoff.delay(4, 1.0, 100.0, rng) for _ in range(500)]
    assert all(4.0 <= d <= 8.0 for d in draws)
    assert max(draws) - min(draws) > 3.0  # really random, not a constant


def test_a_seeded_rng_makes_delays_reproducible():
    assert backoff.delay(3, 0.5, 9, Random(1)) == backoff.delay(3, 0.5, 9, Random(1))


def test_huge_attempt_numbers_stay_finite():
    assert backoff.delay(10_000, 1.0, 30.0) == 30.0


def test_attempts_count_from_one():
    with pytest.raises(ValueError, match="from 1"):
        backoff.delay(0, 1.0, 2.0)
