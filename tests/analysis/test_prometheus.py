"""runbook.analysis.prometheus: conditions parsed safely, three outcomes, limits, the HTTP API."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest

from runbook import analysis
from runbook.analysis import Condition, ConditionError, decide
from runbook.errors import DefinitionError

URL = "http://prometheus.test:9090"


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("result < 0.01", 0.005, True),
        ("result < 0.01", 0.01, False),
        ("result >= 0.05", 0.05, True),
        ("0 <= result < 1", 0.5, True),
        ("0 <= result < 1", 1.0, False),
        ("result < 0.01 or result > 100", 150, True),
        ("result > -1 and not result == 3", 3, False),
        ("result != 0", 0, False),
        ("-result > 2", -3, True),
    ],
)
def test_conditions_hold_as_written(text: str, value: float, expected: bool) -> None:
    assert Condition.parse(text).holds(value) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true')", "expected comparisons"),
        ("result.real < 1", "'result.real' is neither result nor a number"),
        ("result < limit", "'limit' is neither result nor a number"),
        ("result < 'x'", "is neither result nor a number"),
        ("result < True", "is neither result nor a number"),
        ("result + 1 < 2", "'result + 1' is neither result nor a number"),
        ("result in (1, 2)", "only <, <=, >, >=, ==, != compare"),
        ("1 < 2", "does not look at result"),
        ("result <", "is not a condition"),
        ("", "non-empty string"),
    ],
)
def test_anything_but_comparisons_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConditionError) as info:
        Condition.parse(text)
    assert message in str(info.value)


def test_definition_errors_point_at_the_caller() -> None:
    with pytest.raises(DefinitionError) as info:
        analysis.prometheus("up", success="os.system('x')", url=URL)
    assert info.value.file == __file__
    assert "analysis.prometheus(): " in info.value.message
    for kwargs, message in [
        ({"url": "prometheus:9090"}, "url= must be an http(s):// URL"),
        ({"interval": 0}, "interval= must be a number of seconds > 0, got 0"),
        ({"interval": math.inf}, "interval= must be finite"),
        ({"count": 0}, "count= must be an integer >= 1, got 0"),
        ({"failure_limit": -1}, "failure_limit= must be an integer >= 0, got -1"),
        ({"inconclusive_limit": 1.5}, "inconclusive_limit= must be an integer >= 0"),
    ]:
        with pytest.raises(DefinitionError) as info:
            analysis.prometheus("up", **{"url": URL, **kwargs})
        assert message in str(info.value)
    with pytest.raises(DefinitionError, match="query must be a non-empty PromQL string"):
        analysis.prometheus(" ", url=URL)


def test_classify_failure_wins_and_unknown_is_inconclusive() -> None:
    a = analysis.prometheus("x", success="result < 0.01", failure="result >= 0.005", url=URL)
    assert a.classify(0.001)[0] == "pass"
    assert a.classify(0.007) == ("fail", "0.007: result >= 0.005")  # both hold: a failure
    b = analysis.prometheus("x", url=URL)
    assert b.classify(0.02) == (
        "inconclusive",
        "0.02: neither result < 0.01 nor result >= 0.05",
    )
    assert b.classify(math.nan) == ("inconclusive", "NaN")
    assert b.classify(None, "no data") == ("inconclusive", "no data")
    assert b.classify(math.inf)[0] == "fail"


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (["pass"], None),
        (["pass", "pass", "pass"], "pass"),
        (["pass", "fail", "pass"], "pass"),  # one failure tolerated (failure_limit=1)
        (["fail", "fail"], "fail"),  # decided early, before count
        (["inconclusive"], None),
        (["inconclusive", "inconclusive"], "inconclusive"),
        (["pass", "inconclusive", "pass"], "pass"),
        (["fail", "inconclusive", "fail"], "fail"),
    ],
)
def test_decide_follows_the_limits(outcomes: list[str], expected: str | None) -> None:
    got = decide(outcomes, count=3, failure_limit=1, inconclusive_limit=1)
    assert (got[0] if got else None) == expected


def test_never_passes_without_a_passing_measurement() -> None:
    """Argo Rollouts #3850: limits that tolerate everything must not turn "unknown" into "go"."""
    assert decide(["inconclusive"], count=1, failure_limit=0, inconclusive_limit=5) == (
        "inconclusive",
        "no passing measurement in 1",
    )
    assert decide(["fail"], count=1, failure_limit=3, inconclusive_limit=0)[0] == "fail"


def prometheus_answer(request: httpx.Request, body: Any, status: int = 200) -> httpx.Response:
    assert request.url.path == "/api/v1/query"
    return httpx.Response(status, json=body)


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("respond", "expected"),
    [
        (lambda r: prometheus_answer(r, vector("0.002")), (0.002, "")),
        (lambda r: prometheus_answer(r, vector()), (None, "no data")),
        (lambda r: prometheus_answer(r, vector("NaN")), ("nan", "")),
        (
            lambda r: prometheus_answer(r, vector("1", "2")),
            (None, "query returned 2 series; aggregate it to one"),
        ),
        (
            lambda r: prometheus_answer(
                r, {"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}
            ),
            (3.0, ""),
        ),
        (
            lambda r: prometheus_answer(
                r, {"status": "error", "errorType": "bad_data", "error": "parse error"}, 400
            ),
            (None, "Prometheus error (HTTP 400): parse error"),
        ),
        (
            lambda r: httpx.Response(502, text="<html>bad gateway"),
            (None, "Prometheus answered HTTP 502, not JSON"),
        ),
    ],
    ids=["value", "no-data", "nan", "two-series", "scalar", "error", "not-json"],
)
def test_read_turns_every_answer_into_a_value_or_a_reason(respond: Any, expected: Any) -> None:
    a = analysis.prometheus("sum(rate(errors[1m]))", url=URL + "/")
    client = httpx.Client(transport=httpx.MockTransport(respond))
    value, detail = asyncio.run(a.read(client))
    if expected[0] == "nan":
        assert value is not None and math.isnan(value)
    else:
        assert (value, detail) == expected


def test_unreachable_prometheus_is_inconclusive_not_an_exception() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    a = analysis.prometheus("up", url=URL)
    m = asyncio.run(a.measure(httpx.AsyncClient(transport=httpx.MockTransport(refuse))))
    assert (m.value, m.outcome) == (None, "inconclusive")
    assert m.detail == "Prometheus unreachable: ConnectError: connection refused"


def test_query_is_sent_as_given() -> None:
    seen: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params["query"])
        return prometheus_answer(request, vector("0"))

    query = 'sum(rate(http_requests_total{code=~"5.."}[1m]))'
    asyncio.run(
        analysis.prometheus(query, url=URL).read(
            httpx.Client(transport=httpx.MockTransport(respond))
        )
    )
    assert seen == [query]
