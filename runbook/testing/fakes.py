"""Fakes for the outside world: a scripted shell, a clock that never waits, a notifier that keeps.

Each fake implements the same interface as the real resource, so a runbook runs unchanged.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from runbook import guard
from runbook.clock import clip_to_deadline
from runbook.commands import Command
from runbook.notify.base import Message
from runbook.resources import CommandFailed, ShellResult


@dataclass
class _Rule:
    pattern: str
    regex: bool
    result: ShellResult | Callable[[str], ShellResult] | BaseException
    times: int | None

    def matches(self, command: str) -> bool:
        if self.regex:
            return re.search(self.pattern, command) is not None
        return fnmatch.fnmatchcase(command, self.pattern)


class FakeShell:
    """A ``shell`` that runs nothing: scripted results by glob (or regex), every call recorded.

    Unscripted commands succeed with empty output, unless ``strict=True``, where they fail the
    step: useful to prove a runbook runs exactly the commands you expect.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.calls: list[str] = []
        self.commands: list[Command] = []  # what was built: ``argv`` or ``script``
        self.unsafe_calls: list[str] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._ctx: Any = None  # set on the per-run view runbook_bind() returns

    def on(
        self,
        pattern: str,
        *,
        stdout: str = "",
        stderr: str = "",
        returncode: int = 0,
        raises: BaseException | None = None,
        regex: bool = False,
        times: int | None = None,
        handler: Callable[[str], ShellResult] | None = None,
    ) -> FakeShell:
        """Script commands matching ``pattern``; the newest matching rule wins."""
        result: Any = raises or handler or ShellResult(pattern, returncode, stdout, stderr)
        self._rules.insert(0, _Rule(pattern, regex, result, times))
        return self

    def __call__(
        self,
        command: str | Sequence[Any],
        /,
        *,
        check: bool = True,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        env_clear: bool = False,
        input: str | None = None,
        **values: Any,
    ) -> ShellResult:
        """Build and check the command exactly as the real ``shell`` does (argv, quoted
        template, the f-string trap refused), then answer from the script instead of running
        it. ``calls`` records the command line."""
        cmd = guard.prepare(command, values, ctx=self._ctx, options=guard.SHELL_OPTIONS)
        return self._answer(cmd, check)

    def unsafe(
        self,
        command: str,
        /,
        *,
        check: bool = True,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        env_clear: bool = False,
        input: str | None = None,
    ) -> ShellResult:
        """``shell.unsafe(...)``: recorded in ``unsafe_calls`` as well as in ``calls``."""
        cmd = guard.prepare_unsafe(command, ctx=self._ctx, via="shell.unsafe")
        with self._lock:
            self.unsafe_calls.append(cmd.text)
        return self._answer(cmd, check)

    def _answer(self, cmd: Command, check: bool) -> ShellResult:
        text = cmd.text
        with self._lock:
            self.calls.append(text)
            self.commands.append(cmd)
            rule = next((r for r in self._rules if r.matches(text) and r.times != 0), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
        if rule is None:
            if self.strict:
                raise AssertionError(f"unexpected command in strict FakeShell: {text}")
            return ShellResult(text, 0, "", "")
        if isinstance(rule.result, BaseException):
            raise rule.result
        result = (
            rule.result(text)
            if callable(rule.result)
            else ShellResult(text, rule.result.returncode, rule.result.stdout, rule.result.stderr)
        )
        if check and result.returncode != 0:
            raise CommandFailed(result, redact=lambda t: guard.mask(self._ctx, t))
        return result

    def runbook_bind(self, ctx: Any) -> FakeShell:
        """The view of this fake one run uses; the engine asks for it at each run's start.

        It shares this fake's rules and records, and checks commands against that run's params
        and outputs exactly as the real ``shell`` does (the f-string trap is refused offline).
        """
        view = copy.copy(self)
        view._ctx = ctx
        return view

    def ran(self, pattern: str) -> bool:
        """Whether a command matching ``pattern`` (glob) was run: what a test asserts about
        side effects, since the fake runs nothing."""
        return any(fnmatch.fnmatchcase(c, pattern) for c in self.calls)


class MissingFreezegun(ImportError):
    """The fake clock was asked to freeze ``datetime`` without freezegun installed."""


class FakeClock:
    """A clock where sleeping advances time instantly; ``datetime.now()`` follows it (freezegun).

    Timeouts still fire: a sleep that crosses the running step's deadline advances only to the
    deadline and raises ``StepTimeout``. Parallel branches that sleep each advance the shared
    time, so fake time is the sum of their waits, not the maximum: assert on ``sleeps``, not on
    total elapsed time, when branches run in parallel.
    """

    def __init__(self, start: datetime | None = None, *, freeze: bool = True) -> None:
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._offset = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()
        self._freezer: Any = None
        self._frozen: Any = None
        self._saved_limit = 5
        if freeze:
            try:
                from freezegun import freeze_time
            except ImportError:
                raise MissingFreezegun(
                    "FakeClock(freeze=True) (the fake_clock fixture) makes datetime.now() "
                    "follow the fake clock with freezegun, which is not installed: "
                    "pip install 'runbook[testing]' (or FakeClock(freeze=False))"
                ) from None
            # pytest's own timer (``_pytest.timing``: --durations, junit times) keeps real time.
            self._freezer = freeze_time(
                self._start, real_asyncio=True, tick=False, ignore=["_pytest."]
            )

    def start(self) -> FakeClock:
        """Make ``datetime.now()`` follow this clock until ``stop`` (``with clock:`` does both),
        so audit times and code reading the time agree with ``now()``."""
        if self._freezer is not None and self._frozen is None:
            import freezegun.api

            # freezegun answers real time to any call with ``threading`` in its recent stack,
            # which is every sync step (they run in worker threads) and every threaded provider
            # call: the run would see two clocks. Inspecting no frames makes time fake everywhere
            # while the clock runs; asyncio keeps real time (``real_asyncio``).
            self._saved_limit = freezegun.api.call_stack_inspection_limit
            freezegun.api.call_stack_inspection_limit = 0
            self._frozen = self._freezer.start()
        return self

    def stop(self) -> None:
        """Give ``datetime.now()`` real time back."""
        if self._frozen is not None:
            import freezegun.api

            self._freezer.stop()
            self._frozen = None
            freezegun.api.call_stack_inspection_limit = self._saved_limit

    def __enter__(self) -> FakeClock:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def now(self) -> datetime:
        """The start time plus every second slept or advanced: deterministic in every run."""
        return self._start + timedelta(seconds=self._offset)

    def monotonic(self) -> float:
        """Seconds slept or advanced so far: durations measured with it are exact."""
        return self._offset

    def advance(self, seconds: float) -> None:
        """Move time on without a sleep being recorded, as if the world waited (a lease that
        runs out, a deadline that passes)."""
        with self._lock:
            self._offset += seconds
            if self._frozen is not None:
                self._frozen.tick(timedelta(seconds=seconds))

    def sleep(self, seconds: float) -> None:
        """Return at once, time moved on: a 10-minute backoff takes no test time. The wait is
        kept in ``sleeps``; one that crosses the step's deadline raises ``StepTimeout`` there."""
        self.sleeps.append(seconds)
        seconds, timeout = clip_to_deadline(self, seconds)
        self.advance(seconds)
        if timeout:
            raise timeout

    async def asleep(self, seconds: float) -> None:
        """``sleep`` for async steps, still yielding to the event loop once."""
        self.sleep(seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep would be

    @property
    def elapsed(self) -> float:
        """Fake seconds since the start (the sum of parallel branches' waits, not the max)."""
        return self._offset


class FakeNotifier:
    """A notification channel that keeps every ``Message`` (``fake://`` in routing rules)."""

    url = "fake://"

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.fail_with: BaseException | None = None

    async def send(self, message: Message) -> None:
        """Keep ``message``; raise ``fail_with`` instead when set, to test a failing channel."""
        if self.fail_with is not None:
            raise self.fail_with
        self.messages.append(message)

    async def aclose(self) -> None:
        """Nothing to close: the notifier protocol asks for it."""

    def kinds(self) -> list[str]:
        """The event kinds notified, in order: the usual assertion."""
        return [m.kind for m in self.messages]

    @property
    def plugin(self) -> Any:
        """A plugin object registering this notifier for ``fake://``."""
        from runbook.hookspecs import Provider, hookimpl

        notifier = self

        class _Plugin:
            @hookimpl
            def runbook_notifiers(self) -> list[Provider]:
                return [Provider("fake", lambda url, **_: notifier, "test notifier")]

        return _Plugin()
