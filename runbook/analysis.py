"""Metric analysis for canaries: measure a Prometheus query during the bake, decide in three ways.

::

    from runbook import analysis
    error_rate = analysis.prometheus(
        'sum(rate(http_requests_total{job="web",code=~"5.."}[1m]))'
        ' / sum(rate(http_requests_total{job="web"}[1m]))',
        success="result < 0.01", failure="result >= 0.05",
        url="http://prometheus.internal:9090", interval=30, count=5,
    )
    release = canary("web", weights=[5, 50, 100], bake=150, analysis=error_rate)

Each measurement is one instant query (``/api/v1/query``) and has one of three outcomes:

* ``fail`` when ``failure`` holds (checked first: a value that satisfies both is a failure);
* ``pass`` when ``success`` holds;
* ``inconclusive`` otherwise: no data, NaN, more than one series, an error reaching Prometheus
  or a value for which neither condition holds. "Could not tell" is never read as "fine".

The limits follow Argo Rollouts: ``failure_limit`` failed and ``inconclusive_limit``
inconclusive measurements are tolerated; one more decides (``fail`` aborts the canary,
``inconclusive`` pauses the run for a human). An analysis with no passing measurement never
passes (the lesson of Argo Rollouts #3850: an inconclusive result must never promote).

Conditions are parsed, not evaluated: comparisons of ``result`` with numbers, chained
(``0 <= result < 0.01``), combined with ``and`` / ``or`` / ``not``. Anything else is a definition
error, so a runbook cannot smuggle code into a condition string.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from runbook.conditions import Condition, ConditionError
from runbook.errors import DefinitionError

__all__ = ["Condition", "Measurement", "PrometheusAnalysis", "Verdict", "decide", "prometheus"]

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class Measurement:
    """One query result: ``value`` is None when there was none to read (see ``detail``)."""

    query: str
    value: float | None
    outcome: str
    detail: str = ""
    at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as the audit trail records each measurement."""
        return {
            "query": self.query,
            "value": self.value,
            "outcome": self.outcome,
            "detail": self.detail,
            "at": self.at,
        }


@dataclass(frozen=True)
class Verdict:
    """The analysis' decision and the measurements it rests on."""

    outcome: str
    measurements: tuple[Measurement, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the step's output, so the decision and its evidence stay together."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "measurements": [m.to_dict() for m in self.measurements],
        }


def decide(
    outcomes: Sequence[str], *, count: int, failure_limit: int, inconclusive_limit: int
) -> tuple[str, str] | None:
    """The outcome so far and why, or None to keep measuring. Pure: the tests feed it lists.

    Decides early as soon as a limit is exceeded (waiting cannot undo it); after ``count``
    measurements, passes only with at least one passing measurement.
    """
    fails = outcomes.count(FAIL)
    unknown = outcomes.count(INCONCLUSIVE)
    passes = outcomes.count(PASS)
    if fails > failure_limit:
        return FAIL, f"{fails} of {len(outcomes)} measurements failed (limit {failure_limit})"
    if unknown > inconclusive_limit:
        return INCONCLUSIVE, (
            f"{unknown} of {len(outcomes)} measurements inconclusive (limit {inconclusive_limit})"
        )
    if len(outcomes) < count:
        return None
    if passes == 0:
        outcome = FAIL if fails else INCONCLUSIVE
        return outcome, f"no passing measurement in {len(outcomes)}"
    return PASS, f"{passes} of {len(outcomes)} measurements passed"


def _number(raw: Any) -> float:
    return float(raw)  # Prometheus sends sample values as strings: "0.012", "NaN", "+Inf"


@dataclass(frozen=True)
class PrometheusAnalysis:
    """What ``prometheus(...)`` returns; ``canary(..., analysis=...)`` knows how to run it."""

    query: str
    success: Condition
    failure: Condition
    url: str
    interval: float = 30.0
    count: int = 5
    failure_limit: int = 1
    inconclusive_limit: int = 1
    timeout: float = 10.0

    @property
    def __name__(self) -> str:  # step docstrings and error messages name the analysis
        return f"prometheus({self.query!r})"

    @property
    def duration(self) -> float:
        """Seconds the measurements take when no limit stops them early (``interval * count``):
        a canary's bake lasts at least this long."""
        return self.interval * self.count

    def classify(self, value: float | None, detail: str = "") -> tuple[str, str]:
        """The outcome of one value (decision only, no I/O)."""
        if value is None:
            return INCONCLUSIVE, detail or "no data"
        if math.isnan(value):
            return INCONCLUSIVE, "NaN"
        if self.failure.holds(value):
            return FAIL, f"{value:g}: {self.failure.text}"
        if self.success.holds(value):
            return PASS, f"{value:g}: {self.success.text}"
        return INCONCLUSIVE, f"{value:g}: neither {self.success.text} nor {self.failure.text}"

    async def read(self, client: httpx.Client | httpx.AsyncClient) -> tuple[float | None, str]:
        """One instant query: ``(value, "")`` or ``(None, why there is no value)``.

        ``client`` is usually the run's ``http`` resource (a sync client, called in a worker
        thread), so a test fakes Prometheus the way it fakes any other HTTP service.
        """
        endpoint = self.url.rstrip("/") + "/api/v1/query"
        params = {"query": self.query}
        try:
            if isinstance(client, httpx.AsyncClient):
                response = await client.get(endpoint, params=params, timeout=self.timeout)
            else:
                response = await asyncio.to_thread(
                    client.get, endpoint, params=params, timeout=self.timeout
                )
        except httpx.HTTPError as exc:
            return None, f"Prometheus unreachable: {type(exc).__name__}: {exc}"
        try:
            body = response.json()
        except ValueError:
            return None, f"Prometheus answered HTTP {response.status_code}, not JSON"
        if response.status_code != 200 or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            return None, f"Prometheus error (HTTP {response.status_code}): {error or body}"
        try:
            data = body["data"]
            kind, result = data["resultType"], data["result"]
            if kind == "scalar":
                return _number(result[1]), ""
            if kind != "vector":
                return None, f"query returned a {kind}, expected one number"
            if not result:
                return None, "no data"
            if len(result) > 1:
                return None, f"query returned {len(result)} series; aggregate it to one"
            return _number(result[0]["value"][1]), ""
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return None, f"unexpected Prometheus answer: {type(exc).__name__}: {exc}"

    async def measure(self, client: httpx.Client | httpx.AsyncClient, now: str = "") -> Measurement:
        """One query, classified: an unreachable Prometheus or an empty answer is a measurement
        too (``inconclusive``), so the verdict weighs it instead of crashing the step."""
        value, detail = await self.read(client)
        outcome, why = self.classify(value, detail)
        return Measurement(self.query, value, outcome, why, now)

    async def evaluate(
        self,
        *,
        clock: Any,
        record: Callable[[Measurement], None],
        progress: Callable[[str, float], None],
        bake: float = 0.0,
        client: httpx.Client | httpx.AsyncClient | None = None,
    ) -> Verdict:
        """Measure every ``interval`` seconds on ``clock`` while baking; stop early on a verdict.

        The step lasts ``max(bake, interval * count)`` unless a limit is exceeded first.
        ``record`` is called with each measurement before the next one starts (the audit).
        """
        total = max(bake, self.duration)
        own: httpx.AsyncClient | None = None  # closed here; a caller's client is the caller's
        if client is None:
            client = own = httpx.AsyncClient(timeout=self.timeout)
        taken: list[Measurement] = []
        elapsed = 0.0
        try:
            for _ in range(self.count):
                await clock.asleep(self.interval)
                elapsed += self.interval
                m = await self.measure(client, clock.now().isoformat())
                taken.append(m)
                record(m)
                shown = "no value" if m.value is None else f"{m.value:g}"
                progress(
                    f"analysis {len(taken)}/{self.count}: {shown} {m.outcome}",
                    min(1.0, elapsed / total),
                )
                decision = decide(
                    [t.outcome for t in taken],
                    count=self.count,
                    failure_limit=self.failure_limit,
                    inconclusive_limit=self.inconclusive_limit,
                )
                if decision is not None and decision[0] != PASS:
                    return Verdict(decision[0], tuple(taken), decision[1])
        finally:
            if own is not None:
                await own.aclose()
        if total > elapsed:
            progress(f"baking: {elapsed:g}s of {total:g}s", elapsed / total)
            await clock.asleep(total - elapsed)
        decision = decide(
            [t.outcome for t in taken],
            count=self.count,
            failure_limit=self.failure_limit,
            inconclusive_limit=self.inconclusive_limit,
        )
        assert decision is not None
        return Verdict(decision[0], tuple(taken), decision[1])


@dataclass(frozen=True)
class DeferredAnalysis:
    """``prometheus(...)`` with ``param(...)`` arguments: the strategy binds it when the run
    starts (``bind(params)``; ``bind(None)`` uses the params' defaults, for ``list``)."""

    arguments: dict[str, Any]
    where: tuple[str | None, int | None]

    def params_used(self) -> list[Any]:
        from runbook.params import ParamSpec

        return [v for v in self.arguments.values() if isinstance(v, ParamSpec)]

    def bind(self, params: Any) -> PrometheusAnalysis:
        from runbook.strategies.base import resolve

        values = {
            k: resolve(v, params, self.where, "analysis.prometheus")
            for k, v in self.arguments.items()
        }
        return _build(where=self.where, **values)


def _where() -> tuple[str | None, int | None]:
    import sys

    frame = sys._getframe(2)
    return frame.f_code.co_filename, frame.f_lineno


def prometheus(
    query: str,
    *,
    success: str = "result < 0.01",
    failure: str = "result >= 0.05",
    url: str,
    interval: float = 30,
    count: int = 5,
    failure_limit: int = 1,
    inconclusive_limit: int = 1,
    timeout: float = 10,
) -> PrometheusAnalysis:
    """An analysis for ``canary(..., analysis=...)`` over Prometheus' HTTP API (see module doc).

    ``url`` is Prometheus' base URL (``http://prometheus:9090``). Any argument may be a
    ``param(...)``, resolved when the run starts. Bad arguments are definition errors pointing
    at the calling line.
    """
    from runbook.params import ParamSpec

    arguments = dict(
        query=query,
        success=success,
        failure=failure,
        url=url,
        interval=interval,
        count=count,
        failure_limit=failure_limit,
        inconclusive_limit=inconclusive_limit,
        timeout=timeout,
    )
    if any(isinstance(v, ParamSpec) for v in arguments.values()):
        deferred = DeferredAnalysis(arguments, _where())
        deferred.bind(None)  # the defaults must make a valid analysis: checked at load time
        return deferred  # type: ignore[return-value]
    return _build(where=_where(), **arguments)


def _build(
    *,
    where: tuple[str | None, int | None],
    query: Any,
    success: Any,
    failure: Any,
    url: Any,
    interval: Any,
    count: Any,
    failure_limit: Any,
    inconclusive_limit: Any,
    timeout: Any,
) -> PrometheusAnalysis:
    file, line = where

    def error(message: str) -> DefinitionError:
        return DefinitionError(f"analysis.prometheus(): {message}", file=file, line=line)

    if not isinstance(query, str) or not query.strip():
        raise error(f"query must be a non-empty PromQL string, got {query!r}")
    try:
        ok, bad = Condition.parse(success), Condition.parse(failure)
    except ConditionError as exc:
        raise error(str(exc)) from None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise error(f"url= must be an http(s):// URL of Prometheus, got {url!r}")
    for name, value, low in (("interval", interval, 0), ("timeout", timeout, 0)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > low:
            raise error(f"{name}= must be a number of seconds > 0, got {value!r}")
        if not math.isfinite(value):
            raise error(f"{name}= must be finite, got {value!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise error(f"count= must be an integer >= 1, got {count!r}")
    for name, value in (
        ("failure_limit", failure_limit),
        ("inconclusive_limit", inconclusive_limit),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise error(f"{name}= must be an integer >= 0, got {value!r}")
    return PrometheusAnalysis(
        query=query,
        success=ok,
        failure=bad,
        url=url,
        interval=float(interval),
        count=count,
        failure_limit=failure_limit,
        inconclusive_limit=inconclusive_limit,
        timeout=float(timeout),
    )
