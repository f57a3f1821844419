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


def test_stamp_is_the_text_of_the_time_ns_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system clock's ``stamp`` (every audit event's ``at``) writes exactly what
    ``datetime.isoformat`` writes for the same instant: microseconds truncated, no fraction at
    a whole second, a second's text never reused for another one (across a year's end too)."""
    from datetime import UTC, datetime, timedelta

    import runbook.clock as clock_module

    base = int(datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC).timestamp()) * 1_000_000_000
    instants = [base + 1_999_993 * i for i in range(1_200)]  # 2.4 s across midnight, 1 y
    instants += [base, base + 999, base + 1_000, base - 1, base + 1_999_999_999]
    clock = SystemClock()
    for ns in instants:
        fake = lambda ns=ns: ns  # noqa: E731 - the system's time_ns, as the module sees it
        monkeypatch.setattr(clock_module, "_SYSTEM_TIME_NS", (fake,))
        monkeypatch.setattr(clock_module.time, "time_ns", fake)
        moment = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=ns // 1000)
        assert clock.stamp() == moment.isoformat(), ns


def test_events_are_stamped_by_the_clock_the_run_uses() -> None:
    """``stamper``: the system clock's fast ``stamp`` only while its ``now`` is the system's;
    a fake clock, a subclass's ``now`` or a test's replaced ``now`` stamp from that ``now``."""
    from datetime import UTC, datetime

    from runbook.clock import stamper
    from runbook.testing import FakeClock

    fixed = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)

    class Frozen(SystemClock):
        def now(self) -> datetime:
            return fixed

    replaced = SystemClock()
    replaced.now = lambda: fixed  # type: ignore[method-assign]
    fake = FakeClock(start=fixed)
    for clock in (Frozen(), replaced, fake):
        assert stamper(clock)() == "2030-05-06T07:08:09.123456+00:00"
    system = SystemClock()
    assert stamper(system) == system.stamp
    before = datetime.now(UTC).isoformat()
    stamped = stamper(system)()
    assert before <= stamped <= datetime.now(UTC).isoformat()


def test_freeze_time_holds_for_the_stamp() -> None:
    """freezegun replaces ``time.time_ns`` (before 1.5 with one that drops the microseconds):
    the stamp is then the frozen datetime's, to the microsecond, at every supported version."""
    freezegun = pytest.importorskip("freezegun")
    with freezegun.freeze_time("2031-02-03 04:05:06.654321"):
        assert SystemClock().stamp() == "2031-02-03T04:05:06.654321+00:00"
