"""Delivery off the critical path: the run hands over a message and never waits for a channel.

``NotificationService.event`` renders, routes and enqueues, then returns; it is safe to call
from the event-loop thread and from the worker threads sync steps run in. Each channel (one per
URL, opened once) has its own in-order queue, so a person reads "approval needed" before "run
finished", and a channel that is down delays only its own messages. Channels are delivered to
concurrently, up to ``concurrency`` sends at once.

Failures: ``TransientNotificationError`` and timeouts are retried with exponential backoff and
jitter, honouring a server's ``retry_after`` (capped); any other exception is permanent. A
message that finally fails, is dropped because the queue is full, or is still undelivered when
``flush``'s deadline passes is reported once per channel through ``on_failure(message, channel,
error)``, where ``channel`` is the URL reduced to scheme and host and ``error`` is scrubbed of
the URL's secrets. The engine records that as ``notification_failed``, which is never notified
itself: no loops.

Bounded cost for the run: enqueueing is O(channels); the queue holds at most ``max_queue``
deliveries; ``flush(deadline)`` returns by the deadline whatever the channels do. A notifier must
not block the event loop (do blocking I/O in ``asyncio.to_thread``) for these bounds to hold.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runbook import backoff as _backoff
from runbook.audit.events import AuditEvent
from runbook.context import RunInfo
from runbook.errors import NotificationError, UsageError
from runbook.notify.base import Message, Notifier, TransientNotificationError
from runbook.notify.rules import Rule, Rules
from runbook.notify.templates import NEVER_NOTIFIED, Templates
from runbook.notify.urls import scrub
from runbook.urls import redact_url

log = logging.getLogger("runbook.notify")

OnFailure = Callable[[Message, str, str], Any]

# Set while ``on_failure`` runs: whatever it triggers synchronously (the engine recording
# ``notification_failed`` and calling ``event`` with it) must not notify again.
_IN_FAILURE_CALLBACK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "runbook_notify_in_failure", default=False
)


@dataclass(eq=False)
class _Delivery:
    message: Message
    url: str
    attempts: int = 0
    last_error: str = ""
    settled: bool = False


def _describe(exc: Exception) -> str:
    """A permanent failure in one line: our own errors speak for themselves, others get a type."""
    detail = str(exc).strip()
    if isinstance(exc, NotificationError) and detail:
        return detail
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _pause_of(message: Message) -> tuple[str, str] | None:
    """``("gate" | "run", run_id)`` for a message announcing a pause, else None."""
    if message.kind == "approval_requested":
        return "gate", message.run_id
    status = message.data.get("status") if isinstance(message.data, dict) else None
    if message.kind == "run_paused" or (message.kind == "run_finished" and status == "paused"):
        return "run", message.run_id
    return None


class _Channel:
    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = redact_url(url)
        self.queue: deque[_Delivery] = deque()
        self.task: asyncio.Task[None] | None = None
        self.notifier: Notifier | None = None
        self.open_error: str | None = None


class NotificationService:
    """Renders, routes and delivers notifications for one run (one event loop)."""

    def __init__(
        self,
        plugins: Any,
        rules: Rules | Iterable[Mapping[str, Any] | Rule] | None,
        *,
        templates: Templates | Mapping[str, Any] | None = None,
        on_failure: OnFailure | None = None,
        max_queue: int = 1000,
        retries: int = 4,
        timeout: float = 5.0,
        backoff: float = 0.5,
        concurrency: int = 8,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        max_backoff: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if max_queue < 1 or retries < 0 or timeout <= 0 or concurrency < 1 or backoff < 0:
            raise ValueError(
                "max_queue and concurrency must be >= 1, retries and backoff >= 0, timeout > 0"
            )
        self.plugins = plugins
        self.rules = Rules.parse(rules)
        self.templates = (
            templates if isinstance(templates, Templates) else Templates.load(templates)
        )
        self.on_failure = on_failure
        self.max_queue = max_queue
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.concurrency = concurrency
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # guards _loop and _early against start() racing event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._early: list[tuple[Message, list[str]]] = []  # submitted before start()
        self._early_count = 0
        self._channels: dict[str, _Channel] = {}
        self._paused: set[tuple[str, str]] = set()  # (channel url, run id) told of a pause
        self._pending = 0
        self._drained: asyncio.Event | None = None
        self._sem: asyncio.Semaphore | None = None
        self._closed = False
        self.sent = 0
        self.failed = 0
        for url in dict.fromkeys(rule.to for rule in self.rules.rules):
            self._open(self._channels.setdefault(url, _Channel(url)), strict=True)

    # -- producer side: any thread, never blocks ------------------------------------------------

    def event(self, event: AuditEvent, run: RunInfo) -> None:
        """Notify ``event`` (already redacted) to the channels whose rules match it."""
        if event.kind in NEVER_NOTIFIED or _IN_FAILURE_CALLBACK.get():
            return
        try:
            message = self.templates.render(event, run)
        except Exception as exc:  # a notification must never fail the run
            log.error("cannot render a notification for %s: %s", event.kind, exc)
            return
        self._submit(message)

    def adhoc(self, message: Message, run: RunInfo | None = None) -> None:
        """Send a step's own message (the ``notify`` resource), routed as kind ``adhoc``.

        With ``run``, the message's empty run_id/runbook/env/actor are filled from it.
        """
        if _IN_FAILURE_CALLBACK.get():
            return
        self._submit(self.templates.render_adhoc(message, run))

    def _submit(self, message: Message) -> None:
        urls = self._once_per_pause(message, self.rules.route(message))
        if not urls:
            return
        loop = self._loop
        if loop is None:
            refused = None
            with self._lock:
                loop = self._loop
                if loop is None:
                    if self._closed:
                        refused = "the notification service is closed"
                    elif self._early_count + len(urls) > self.max_queue:
                        refused = f"notification queue full ({self.max_queue} waiting): dropped"
                    else:
                        self._early.append((message, urls))
                        self._early_count += len(urls)
            if loop is None:
                if refused:  # reported outside the lock: the callback may call back into us
                    self._fail_all(message, urls, refused)
                return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._enqueue(message, urls)
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, message, urls)
        except RuntimeError:  # the loop is closed: the run is over
            self._fail_all(message, urls, "the notification service is closed")

    def _once_per_pause(self, message: Message, urls: list[str]) -> list[str]:
        """One pause is one message per channel, not three.

        A run that pauses records ``approval_requested`` (per gate), ``run_paused`` and
        ``run_finished`` with status ``paused``. A channel that was told about the pause by the
        first of these (the gate's, which carries the approve command) is not told again by the
        others; a second gate waiting at the same time is news, and still gets its own message.
        """
        pause = _pause_of(message)
        if pause is None or not urls:
            return urls
        kind, run_id = pause
        with self._lock:
            fresh = [u for u in urls if kind == "gate" or (u, run_id) not in self._paused]
            self._paused.update((u, run_id) for u in urls)
        return fresh

    # -- loop side --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop and deliver what was submitted before. Idempotent."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is loop:
                return
            if self._loop is not None:
                raise RuntimeError("NotificationService is bound to another event loop")
            self._sem = asyncio.Semaphore(self.concurrency)
            self._drained = asyncio.Event()
            self._drained.set()
            self._loop = loop
            early, self._early, self._early_count = self._early, [], 0
        for message, urls in early:
            self._enqueue(message, urls)

    def _enqueue(self, message: Message, urls: list[str]) -> None:
        assert self._loop is not None and self._drained is not None
        for url in urls:
            if self._closed:
                self._report(message, url, "the notification service is closed")
                continue
            if self._pending >= self.max_queue:
                self._report(
                    message, url, f"notification queue full ({self.max_queue} waiting): dropped"
                )
                continue
            channel = self._channels.get(url)
            if channel is None:
                channel = self._channels[url] = _Channel(url)
            channel.queue.append(_Delivery(message, url))
            self._pending += 1
            self._drained.clear()
            if channel.task is None or channel.task.done():
                channel.task = self._loop.create_task(
                    self._drain(channel), name=f"runbook-notify {channel.shown}"
                )

    async def _drain(self, channel: _Channel) -> None:
        assert self._sem is not None
        while channel.queue:
            delivery = channel.queue[0]
            async with self._sem:
                await self._deliver(channel, delivery)  # settles it, or is cancelled by flush
            channel.queue.popleft()

    def _open(self, channel: _Channel, strict: bool = False) -> Notifier | None:
        """Open a channel once. ``strict`` (at construction): configuration mistakes raise.

        A scheme no plugin serves, a missing secret variable, a malformed URL are found before
        the run starts (exit 2), not discovered as silence when the page was needed. Anything
        else a notifier raises on open is reported per message, like a failed delivery.
        """
        if channel.notifier is None and channel.open_error is None:
            try:
                channel.notifier = self.plugins.open(
                    "notifier", channel.url, **self.rules.options(channel.url)
                )
            except UsageError as exc:
                text = scrub(str(exc), channel.url)
                if strict:
                    raise type(exc)(f"notify: channel {channel.shown}: {text}") from None
                channel.open_error = f"cannot open channel: {text}"
            except Exception as exc:  # permanent: a bad URL does not get better by retrying
                channel.open_error = f"cannot open channel: {_describe(exc)}"
        return channel.notifier

    async def _deliver(self, channel: _Channel, delivery: _Delivery) -> None:
        notifier = self._open(channel)
        if notifier is None:
            self._settle(delivery, channel.open_error or "cannot open channel")
            return
        attempts = 1 + self.retries
        for attempt in range(1, attempts + 1):
            delivery.attempts = attempt
            retry_after: float | None = None
            try:
                await asyncio.wait_for(notifier.send(delivery.message), self.timeout)
            except TransientNotificationError as exc:
                error, retry_after = str(exc) or type(exc).__name__, exc.retry_after
            except TimeoutError:
                error = f"no answer within {self.timeout:g}s"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._settle(delivery, _describe(exc))
                return
            else:
                self._settle(delivery, None)
                return
            delivery.last_error = scrub(error, channel.url)
            if attempt < attempts:
                delay = self._delay(attempt, retry_after)
                log.info(
                    "notification to %s failed (attempt %d/%d, retrying in %.2fs): %s",
                    channel.shown,
                    attempt,
                    attempts,
                    delay,
                    delivery.last_error,
                )
                await self._sleep(delay)
        self._settle(delivery, f"gave up after {attempts} attempt(s): {delivery.last_error}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential with "equal jitter"; a server's Retry-After wins, up to ``max_backoff``."""
        delay = _backoff.delay(attempt, self.backoff, self.max_backoff, self._rng)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(float(retry_after), self.max_backoff))
        return delay

    def _settle(self, delivery: _Delivery, error: str | None, *, quiet: bool = False) -> bool:
        """Settle ``delivery`` once; True if this call did (``quiet``: no log line of its own)."""
        if delivery.settled:
            return False
        delivery.settled = True
        self._pending -= 1
        if self._pending <= 0 and self._drained is not None:
            self._pending = 0
            self._drained.set()
        if error is None:
            self.sent += 1
        else:
            self._report(delivery.message, delivery.url, error, quiet=quiet)
        return True

    def _fail_all(self, message: Message, urls: list[str], error: str) -> None:
        for url in urls:
            self._report(message, url, error)

    def _report(self, message: Message, url: str, error: str, *, quiet: bool = False) -> None:
        """The one place a final failure goes: a log line (unless the caller writes one for
        several: ``quiet``) and ``on_failure``, secrets scrubbed."""
        self.failed += 1
        shown, text = redact_url(url), scrub(error, url)
        if not quiet:
            log.warning("notification %r to %s failed: %s", message.title, shown, text)
        if self.on_failure is None:
            return
        token = _IN_FAILURE_CALLBACK.set(True)
        try:
            self.on_failure(message, shown, text)
        except Exception as exc:  # the callback's own failure must not reach the run either
            log.error("notification failure callback raised: %s", scrub(str(exc), url))
        finally:
            _IN_FAILURE_CALLBACK.reset(token)

    async def flush(self, deadline_seconds: float) -> None:
        """Wait up to ``deadline_seconds`` for every queued message; report the rest as failed."""
        await self.start()
        await asyncio.sleep(0)  # let event() calls already scheduled from other threads land
        assert self._drained is not None
        if self._pending == 0:
            return
        try:
            await asyncio.wait_for(self._drained.wait(), max(0.0, deadline_seconds))
        except TimeoutError:
            await self._give_up(f"not delivered within the flush deadline of {deadline_seconds:g}s")

    async def _give_up(self, reason: str) -> None:
        tasks = [c.task for c in self._channels.values() if c.task and not c.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            # A notifier that swallows cancellation must not hold the run: wait briefly only.
            await asyncio.wait(tasks, timeout=1.0)
        for channel in self._channels.values():
            given_up: list[str] = []
            last_error = None
            for delivery in channel.queue:
                last = f" (last error: {delivery.last_error})" if delivery.last_error else ""
                if self._settle(delivery, reason + last, quiet=True):
                    given_up.append(delivery.message.title)
                    last_error = last_error or delivery.last_error
            channel.queue.clear()
            channel.task = None
            if given_up:  # one line per channel, however many messages a dead one held
                log.warning("%s", given_up_line(given_up, channel.shown, reason, last_error))

    async def aclose(self) -> None:
        """Report what is still queued as failed and close the channels. Call ``flush`` first."""
        with self._lock:
            self._closed = True
            early, self._early, self._early_count = self._early, [], 0
        for message, urls in early:
            self._fail_all(message, urls, "the notification service closed before delivery")
        if self._loop is None:
            return
        await asyncio.sleep(0)
        await self._give_up("the notification service closed before delivery")
        for channel in self._channels.values():
            if channel.notifier is not None:
                try:
                    await asyncio.wait_for(channel.notifier.aclose(), self.timeout)
                except Exception as exc:
                    log.warning(
                        "closing notification channel %s: %s",
                        channel.shown,
                        scrub(str(exc), channel.url),
                    )
                channel.notifier = None

    async def __aenter__(self) -> NotificationService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def given_up_line(titles: list[str], shown: str, reason: str, last_error: str | None) -> str:
    """One line for every message a channel was given up with: a dead webhook at the end of a
    50-step run is one line, not a hundred. Each message is still reported (``on_failure``:
    the audit's ``notification_failed``)."""
    named = ", ".join(repr(t) for t in titles[:3])
    more = f" and {len(titles) - 3} more" if len(titles) > 3 else ""
    count = "1 notification" if len(titles) == 1 else f"{len(titles)} notifications"
    last = f" (last error: {last_error})" if last_error else ""
    return f"{count} to {shown} failed: {reason}{last}: {named}{more}"
