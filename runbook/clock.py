"""Time, behind one object, so a test can run a 10-minute bake in no wall time.

Every wait in runbook (backoff, bake, polling, lock waits) goes through a ``Clock``. Step timeouts
are deadlines kept in a context variable: a clock sleep that would cross the current step's
deadline sleeps only to the deadline and raises ``StepTimeout``, which is how a timeout fires under
a fake clock, where nothing ever really waits.

``clock.sleep()`` is also the documented cooperative wait of a sync step: a worker thread cannot be
interrupted, but its sleep can. The engine gives each sync step attempt a ``threading.Event``
(``CANCEL``) and sets it when the step is cancelled (Ctrl-C, SIGTERM, a lost lease); a sleep in
progress then ends at once with ``SleepInterrupted``, and so does every later one in that attempt.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from runbook.errors import StepTimeout

# (deadline on the clock's monotonic scale, step name, timeout seconds) of the running step.
DEADLINE: contextvars.ContextVar[tuple[float, str, float] | None] = contextvars.ContextVar(
    "runbook_deadline", default=None
)


# Set when the running sync step attempt is cancelled: its clock sleeps end at once.
CANCEL: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "runbook_cancel", default=None
)


class SleepInterrupted(BaseException):
    """``clock.sleep()`` in a step that is being cancelled.

    A ``BaseException``, like ``asyncio.CancelledError``, so a step's ``except Exception`` does not
    swallow it and go on changing things while its run rolls back.
    """


# (the second, its text): the last second ``isoformat`` wrote, replaced as one tuple so a thread
# never reads one second's text under another's key.
_SECOND: tuple[tuple[int, int, int, int, int, int], str] = ((0, 0, 0, 0, 0, 0), "")


def isoformat(moment: datetime) -> str:
    """``moment.isoformat()``, byte for byte, for every audit event's ``at``: a UTC time's text
    up to the second is the same for every event of that second, so it is written once per
    second (``datetime.isoformat`` is a third of the cost of building an event)."""
    global _SECOND
    micro = moment.microsecond
    if moment.tzinfo is not UTC or not micro:
        return moment.isoformat()
    key = (moment.second, moment.minute, moment.hour, moment.day, moment.month, moment.year)
    kept, text = _SECOND
    if kept != key:
        text = moment.replace(microsecond=0, tzinfo=None).isoformat()
        _SECOND = (key, text)
    return f"{text}.{micro:06d}+00:00"


@runtime_checkable
class Clock(Protocol):
    """Every wait and timestamp of a run goes through one of these (the ``clock`` resource), so
    a test's ``FakeClock`` makes hours of backoff and baking take no time."""

    def now(self) -> datetime:
        """Aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, for durations and deadlines (never goes back)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait in a sync step; ends early with ``StepTimeout`` at the step's deadline."""
        ...

    async def asleep(self, seconds: float) -> None:
        """``sleep`` for async steps and the engine's own waits."""
        ...


def remaining(clock: Clock) -> float | None:
    """Seconds left before the current step's deadline, or None without one."""
    deadline = DEADLINE.get()
    if deadline is None:
        return None
    return max(0.0, deadline[0] - clock.monotonic())


def clip_to_deadline(clock: Clock, seconds: float) -> tuple[float, StepTimeout | None]:
    """How long a sleep may last, and the timeout to raise after it if it hits the deadline."""
    deadline = DEADLINE.get()
    if deadline is None:
        return seconds, None
    left = deadline[0] - clock.monotonic()
    if seconds < left:
        return seconds, None
    return max(0.0, left), StepTimeout(f"step {deadline[1]!r} timed out after {deadline[2]:g}s")


def stamper(clock: Clock) -> Callable[[], str]:
    """How to write now as an audit event's ``at`` on ``clock``: the system clock's ``stamp``
    when its ``now`` is the system's, else ``isoformat(clock.now())`` (a fake clock, a clock
    whose ``now`` a subclass or a test replaced)."""
    if (
        isinstance(clock, SystemClock)
        and type(clock).now is SystemClock.now
        and "now" not in vars(clock)
    ):
        return clock.stamp
    return lambda: isoformat(clock.now())


# (the second since the epoch, its text up to the second): what ``SystemClock.stamp`` wrote
# last, replaced as one tuple so a thread never reads one second's text under another's key.
_EPOCH_SECOND: tuple[int, str] = (-1, "")
# The system's ``time_ns``, as imported: anything else at ``time.time_ns`` is a test's fake
# time. In a tuple, since freezegun also replaces every module attribute that is the real one.
_SYSTEM_TIME_NS = (time.time_ns,)


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The system's time, in UTC."""
        return datetime.now(UTC)

    def stamp(self) -> str:
        """``isoformat(self.now())`` without a datetime: the text of ``time.time_ns()`` to the
        microsecond (truncated, as ``datetime.now`` is), its second written once per second.
        Every audit event's ``at`` (two per step); half the cost of the datetime's text.

        While something has replaced ``time.time_ns`` (freezegun's ``freeze_time``, whose
        ``time_ns`` drops the microseconds before 1.5), the datetime's text, as before."""
        global _EPOCH_SECOND
        time_ns = time.time_ns
        if time_ns is not _SYSTEM_TIME_NS[0]:
            return isoformat(self.now())
        second, nanos = divmod(time_ns(), 1_000_000_000)
        kept, text = _EPOCH_SECOND
        if kept != second:
            text = datetime.fromtimestamp(second, UTC).replace(tzinfo=None).isoformat()
            _EPOCH_SECOND = (second, text)
        micro = nanos // 1000
        return f"{text}.{micro:06d}+00:00" if micro else f"{text}+00:00"

    def monotonic(self) -> float:
        """``time.monotonic()``: unaffected by the wall clock being set."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """A real wait that a cancelled attempt interrupts at once (``SleepInterrupted``): a
        worker thread cannot be killed, but it can stop waiting. Cut at the step's deadline."""
        seconds, timeout = clip_to_deadline(self, seconds)
        cancel = CANCEL.get()
        if cancel is not None:
            if cancel.wait(max(0.0, seconds)):
                raise SleepInterrupted("the step was cancelled while it waited in clock.sleep()")
        elif seconds > 0:
            time.sleep(seconds)
        if timeout:
            raise timeout

    async def asleep(self, seconds: float) -> None:
        """``asyncio.sleep``, cut at the step's deadline."""
        import asyncio  # here: ``load()`` imports this module, and asyncio costs it ~15 ms

        seconds, timeout = clip_to_deadline(self, seconds)
        await asyncio.sleep(seconds)
        if timeout:
            raise timeout
