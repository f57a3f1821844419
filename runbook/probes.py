"""Reading infrastructure state without fooling yourself: polling, and three-valued probe results.

Two ideas, both about not mistaking "could not tell" for "fine":

* ``wait_until`` / ``await_until`` poll a check until it returns something truthy, with capped
  exponential backoff and jitter, through the run's ``clock`` (so a test's fake clock makes a
  five-minute wait take no wall time, and a step's ``timeout`` still fires). When time runs out
  they raise ``WaitTimeout`` carrying the last value or error seen, never a bare "timed out".
* ``http_probe`` / ``command_probe`` return a ``ProbeResult`` whose outcome is ``healthy``,
  ``unhealthy`` or ``ambiguous``. A timeout, a refused connection, a redirect, a 404, a body that
  does not parse: these say nothing about health, so they are ``ambiguous``, never healthy.
  A ``ProbeResult`` is truthy only when healthy, so it plugs straight into ``wait_until``.

Branch on the outcome with ``when=`` (see docs/probes.md)::

    @probe
    def api_health(http):
        return http_probe("http://api.internal/health", client=http)

    @step(when=lambda api_health: api_health.ambiguous)
    def page_oncall(api_health, notify): ...
"""

from __future__ import annotations

import enum
import inspect
import random
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from runbook import backoff as _backoff
from runbook.clock import Clock
from runbook.errors import Ambiguous, StepFailed, StepTimeout

if TYPE_CHECKING:  # the HTTP probes get a client from their caller, who has httpx imported;
    import httpx  # the strategies import this module for every command, and httpx is heavy

__all__ = [
    "Outcome",
    "ProbeResult",
    "WaitTimeout",
    "ahttp_probe",
    "await_until",
    "command_probe",
    "http_probe",
    "wait_until",
]

# Never "not ready yet": the step's own timeout fired, or the check itself is broken (retrying a
# TypeError for the whole timeout would only hide the bug for minutes).
_NEVER_RETRIED: tuple[type[BaseException], ...] = (
    StepTimeout,
    TypeError,
    NameError,
    AttributeError,
    ImportError,
)


class Outcome(enum.StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    AMBIGUOUS = "ambiguous"


class ProbeResult(dict[str, Any]):
    """What a probe saw. Truthy only when healthy, so ``ambiguous`` can never pass for healthy.

    ``value`` carries what the probe read (status code, parsed body, return code) for audit
    output and for ``when=`` conditions that need more than the outcome.

    It is a ``dict`` (``{"outcome", "detail", "value"}``; treat it as read-only) so that a probe
    can return it and the run store can keep it as JSON. A run resumed from the store gets the
    plain dict back; ``ProbeResult.of(output)`` turns either into a ``ProbeResult`` again.
    """

    def __init__(self, outcome: Any, detail: str = "", value: Any = None) -> None:
        if not isinstance(outcome, str):  # dict-style construction: dataclasses.asdict, copy
            super().__init__(outcome)
            Outcome(self["outcome"])
            return
        super().__init__(outcome=Outcome(outcome).value, detail=detail, value=value)

    @classmethod
    def of(cls, data: Any) -> ProbeResult:
        """A ``ProbeResult`` from itself or from its stored ``dict`` form."""
        if isinstance(data, ProbeResult):
            return data
        if isinstance(data, dict) and "outcome" in data:
            return cls(data["outcome"], data.get("detail", ""), data.get("value"))
        raise TypeError(f"not a probe result: {data!r}")

    @property
    def outcome(self) -> Outcome:
        return Outcome(self["outcome"])

    @property
    def detail(self) -> str:
        return self["detail"]

    @property
    def value(self) -> Any:
        return self["value"]

    @property
    def healthy(self) -> bool:
        return self.outcome is Outcome.HEALTHY

    @property
    def unhealthy(self) -> bool:
        return self.outcome is Outcome.UNHEALTHY

    @property
    def ambiguous(self) -> bool:
        return self.outcome is Outcome.AMBIGUOUS

    def __bool__(self) -> bool:
        return self.healthy

    def __repr__(self) -> str:
        return f"ProbeResult({self['outcome']!r}, {self.detail!r}, {self.value!r})"

    def decisive(self) -> ProbeResult:
        """Return self, or raise ``Ambiguous``: for steps that must stop rather than guess."""
        if self.ambiguous:
            raise Ambiguous(f"probe was ambiguous: {self.detail}")
        return self


class WaitTimeout(StepFailed, TimeoutError):
    """``wait_until`` ran out of time. ``last`` is the last value the check returned, ``error``
    the last exception it raised (if the last attempt raised), ``attempts`` how often it ran."""

    def __init__(
        self,
        message: str,
        *,
        last: Any = None,
        error: BaseException | None = None,
        attempts: int = 0,
    ) -> None:
        self.last = last
        self.error = error
        self.attempts = attempts
        super().__init__(message)


class _Poll:
    """The bookkeeping shared by the sync and async loops: delays, deadline, last result."""

    def __init__(
        self,
        timeout: float,
        backoff: float,
        max_backoff: float,
        jitter: bool,
        rng: random.Random | None,
        clock: Clock,
        message: str,
        progress: Callable[[str, float | None], Any] | None,
        retry_on: tuple[type[BaseException], ...],
    ) -> None:
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        if backoff <= 0 or max_backoff <= 0:
            raise ValueError("backoff and max_backoff must be > 0")
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.clock = clock
        self.message = message
        self.progress = progress
        self.retry_on = retry_on
        self.start = clock.monotonic()
        self.attempts = 0
        self.last: Any = None
        self.error: BaseException | None = None
        self.final = False

    def record(self, value: Any = None, error: BaseException | None = None) -> None:
        if error is not None and (
            isinstance(error, _NEVER_RETRIED) or not isinstance(error, self.retry_on)
        ):
            raise error
        self.attempts += 1
        self.last, self.error = value, error

    def next_delay(self) -> float:
        """Seconds to sleep before the next attempt; raises ``WaitTimeout`` when none is left.

        The n-th delay is ``backoff * 2**(n-1)`` capped at ``max_backoff``; with jitter it is drawn
        uniformly from [delay/2, delay] so that many waiters do not poll in lockstep. The last
        sleep is cut to land exactly on the timeout, where the check runs one final time.
        """
        elapsed = self.clock.monotonic() - self.start
        left = self.timeout - elapsed
        if left <= 0 or self.final:
            raise self._timeout(elapsed)
        if self.progress is not None:
            fraction = min(1.0, elapsed / self.timeout) if self.timeout else None
            self.progress(f"{self.message} ({self.attempts} attempts, {elapsed:.0f}s)", fraction)
        delay = _backoff.delay(
            self.attempts, self.backoff, self.max_backoff, self.rng if self.jitter else None
        )
        if delay >= left:
            # Float rounding may leave the clock a hair short of the deadline after this sleep;
            # the attempt after it is the last one either way.
            self.final = True
            return left
        return delay

    def _timeout(self, elapsed: float) -> WaitTimeout:
        if self.error is not None:
            seen = f"last error: {type(self.error).__name__}: {self.error}"
        elif isinstance(self.last, ProbeResult):
            seen = f"last result: {self.last.outcome}: {self.last.detail}"
        elif self.last is None:
            seen = "last result: None; the check must return something truthy when ready"
        else:
            seen = f"last result: {self.last!r}"
        return WaitTimeout(
            f"{self.message}: not true after {elapsed:g}s and {self.attempts} attempts ({seen})",
            last=self.last,
            error=self.error,
            attempts=self.attempts,
        )


def wait_until(
    check: Callable[[], Any],
    timeout: float,
    backoff: float = 1.0,
    *,
    clock: Clock,
    max_backoff: float = 30.0,
    jitter: bool = True,
    rng: random.Random | None = None,
    progress: Callable[[str, float | None], Any] | None = None,
    message: str = "waiting",
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Any:
    """Call ``check`` until it returns something truthy and return that; ``WaitTimeout`` after
    ``timeout`` seconds on ``clock``.

    An exception from ``check`` counts as "not yet" when it is one of ``retry_on`` (a health
    endpoint refusing connections while the service boots), except ``StepTimeout`` and errors
    that mean the check is buggy (``TypeError``, ``NameError``, ``AttributeError``,
    ``ImportError``), which propagate at once. ``progress(message, fraction)`` is called before
    each sleep; pass ``ctx.progress`` to show it in the terminal.
    """
    poll = _Poll(timeout, backoff, max_backoff, jitter, rng, clock, message, progress, retry_on)
    while True:
        try:
            value = check()
        except Exception as exc:
            poll.record(error=exc)
        else:
            if value:
                return value
            poll.record(value)
        clock.sleep(poll.next_delay())


async def await_until(
    check: Callable[[], Any | Awaitable[Any]],
    timeout: float,
    backoff: float = 1.0,
    *,
    clock: Clock,
    max_backoff: float = 30.0,
    jitter: bool = True,
    rng: random.Random | None = None,
    progress: Callable[[str, float | None], Any] | None = None,
    message: str = "waiting",
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Any:
    """``wait_until`` for async code: ``check`` may be sync or return an awaitable."""
    poll = _Poll(timeout, backoff, max_backoff, jitter, rng, clock, message, progress, retry_on)
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            poll.record(error=exc)
        else:
            if value:
                return value
            poll.record(value)
        await clock.asleep(poll.next_delay())


def _statuses(expect_status: int | Collection[int]) -> Collection[int]:
    return (expect_status,) if isinstance(expect_status, int) else expect_status


def _judge_response(
    response: httpx.Response,
    url: str,
    statuses: Collection[int],
    expect: Callable[[Any], Any] | None,
) -> ProbeResult:
    status = response.status_code
    where = f"GET {url} -> {status}"
    if status not in statuses:
        if 500 <= status <= 599:
            return ProbeResult(Outcome.UNHEALTHY, where, status)
        # A redirect, a 404 or a 429 says nothing about the service's health.
        return ProbeResult(Outcome.AMBIGUOUS, f"{where} (expected {sorted(statuses)})", status)
    if expect is None:
        return ProbeResult(Outcome.HEALTHY, where, status)
    try:
        body = response.json()
    except ValueError:
        return ProbeResult(Outcome.AMBIGUOUS, f"{where} but the body is not JSON", status)
    if expect(body):
        return ProbeResult(Outcome.HEALTHY, where, body)
    return ProbeResult(Outcome.UNHEALTHY, f"{where} but the body failed the check", body)


def _transport_error(url: str, exc: httpx.HTTPError) -> ProbeResult:
    import httpx

    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return ProbeResult(Outcome.AMBIGUOUS, f"GET {url} {kind}: {type(exc).__name__}: {exc}")


def http_probe(
    url: str,
    *,
    client: httpx.Client,
    expect_status: int | Collection[int] = 200,
    expect: Callable[[Any], Any] | None = None,
    timeout: float = 5.0,
) -> ProbeResult:
    """GET ``url`` once: ``expect_status`` is healthy, 5xx unhealthy, anything else ambiguous.

    With ``expect``, the body is parsed as JSON and passed to it: a falsy answer is unhealthy, a
    body that is not JSON is ambiguous. Redirects are not followed: a health endpoint that
    redirects (to a login page, say) has not told you anything.
    """
    import httpx

    statuses = _statuses(expect_status)
    try:
        response = client.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return _transport_error(url, exc)
    return _judge_response(response, url, statuses, expect)


async def ahttp_probe(
    url: str,
    *,
    client: httpx.AsyncClient,
    expect_status: int | Collection[int] = 200,
    expect: Callable[[Any], Any] | None = None,
    timeout: float = 5.0,
) -> ProbeResult:
    """``http_probe`` with an ``httpx.AsyncClient``."""
    import httpx

    statuses = _statuses(expect_status)
    try:
        response = await client.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return _transport_error(url, exc)
    return _judge_response(response, url, statuses, expect)


# Shell exit codes that mean the command never ran (not executable, not found).
_NOT_RUN = {126: "not executable", 127: "not found"}


def command_probe(
    cmd: Any,
    *,
    shell: Callable[..., Any],
    expect_returncode: int = 0,
    timeout: float | None = None,
) -> ProbeResult:
    """Run ``cmd`` with the ``shell`` resource: ``expect_returncode`` is healthy.

    Another exit code is unhealthy, except those that mean the check never ran (126, 127), a
    kill by a signal (negative code) or a timeout, which are ambiguous.
    """
    kwargs: dict[str, Any] = {"check": False}
    if timeout is not None:
        kwargs["timeout"] = timeout
    try:
        result = shell(cmd, **kwargs)
    except (StepTimeout, TimeoutError) as exc:
        return ProbeResult(Outcome.AMBIGUOUS, f"{cmd}: {exc}")
    except OSError as exc:
        return ProbeResult(Outcome.AMBIGUOUS, f"{cmd}: could not run: {exc}")
    code = result.returncode
    tail = (getattr(result, "stderr", "") or getattr(result, "stdout", "") or "").strip()[-200:]
    detail = f"{cmd}: exit {code}" + (f": {tail}" if tail else "")
    if code == expect_returncode:
        return ProbeResult(Outcome.HEALTHY, detail, code)
    if code < 0 or code in _NOT_RUN:
        why = _NOT_RUN.get(code, "killed by a signal")
        return ProbeResult(Outcome.AMBIGUOUS, f"{detail} (command {why})", code)
    return ProbeResult(Outcome.UNHEALTHY, detail, code)
