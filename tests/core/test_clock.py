"""SystemClock.sleep(): the cooperative wait a cancelled step attempt leaves at once."""

from __future__ import annotations

import threading
import time

import pytest

from runbook.clock import CANCEL, SleepInterrupted, SystemClock


def test_sleep_ends_when_the_attempt_is_cancelled():
    cancel = threading.Event()
    started = threading.Event()
    outcome: list[object] = []

    def step() -> None:
        CANCEL.set(cancel)
        started.set()
        try:
            SystemClock().sleep(60)
            outcome.append("slept through")
        except SleepInterrupted as exc:
            outcome.append(exc)

    thread = threading.Thread(target=step)
    thread.start()
    assert started.wait(5)
    cancel.set()
    thread.join(10)  # bound: 60 s without the event
    assert not thread.is_alive()
    assert isinstance(outcome[0], SleepInterrupted)
    # A BaseException: a step's ``except Exception`` does not swallow it.
    assert not isinstance(outcome[0], Exception)


def test_a_later_sleep_of_a_cancelled_attempt_does_not_wait():
    cancel = threading.Event()
    cancel.set()
    token = CANCEL.set(cancel)
    try:
        began = time.monotonic()
        with pytest.raises(SleepInterrupted):
            SystemClock().sleep(30)
        assert time.monotonic() - began < 5
    finally:
        CANCEL.reset(token)


def test_sleep_without_a_cancel_event_just_sleeps():
    began = time.monotonic()
    SystemClock().sleep(0.01)
    assert time.monotonic() - began >= 0.01


def test_isoformat_is_datetime_isoformat_byte_for_byte() -> None:
    """Every audit event's ``at``: the second's text is reused, never for another second."""
    from datetime import UTC, datetime, timedelta, timezone

    from runbook.clock import isoformat

    start = datetime(2026, 12, 31, 23, 59, 58, 999_990, tzinfo=UTC)
    moments = [start + timedelta(microseconds=7 * i) for i in range(600)]  # across a year's end
    moments += [
        datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: no fraction
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 6, 1, 12, 0, 0, 5),  # naive
        datetime(2026, 6, 1, 12, 0, 0, 5, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, 1, 5, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, 0, 6, tzinfo=UTC),  # back to a second seen before
    ]
    for moment in moments:
        assert isoformat(moment) == moment.isoformat()
