"""wait_until/await_until (backoff, jitter, timeout) and the three-valued probes."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import pickle
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx

from runbook.clock import SystemClock
from runbook.errors import Ambiguous, StepFailed, StepTimeout
from runbook.probes import (
    Outcome,
    ProbeResult,
    WaitTimeout,
    ahttp_probe,
    await_until,
    command_probe,
    http_probe,
    wait_until,
)
from runbook.resources import Shell, ShellResult


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def after(n: int, value: object = "ready"):
    """A check that is falsy for its first ``n`` calls."""
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        return value if calls["n"] > n else None

    return check


def test_returns_the_truthy_value_without_sleeping():
    clock = Clock()
    assert wait_until(lambda: {"version": 7}, 10, clock=clock) == {"version": 7}
    assert clock.sleeps == []


def test_backoff_doubles_and_is_capped():
    clock = Clock()
    assert wait_until(after(7), 1000, 1.0, clock=clock, max_backoff=10, jitter=False) == "ready"
    assert clock.sleeps == [1, 2, 4, 8, 10, 10, 10]


def test_jitter_stays_within_half_to_full_delay():
    clock = Clock()
    wait_until(after(40), 10_000, 2.0, clock=clock, max_backoff=30, rng=random.Random(7))
    nominal = [min(30, 2.0 * 2**i) for i in range(40)]
    assert all(d / 2 <= s <= d for s, d in zip(clock.sleeps, nominal, strict=True))
    assert len(set(clock.sleeps)) > 30  # really jittered


def test_timeout_lands_on_the_deadline_and_reports_the_last_value():
    clock = Clock()
    seen = iter(range(100))
    with pytest.raises(WaitTimeout) as info:
        wait_until(
            lambda: next(seen) * 0, 20, 4.0, clock=clock, jitter=False, message="db replica in sync"
        )
    assert clock.sleeps == [4, 8, 8]  # the last sleep is cut to end exactly at 20s
    err = info.value
    assert err.attempts == 4 and err.last == 0 and err.error is None
    assert str(err) == "db replica in sync: not true after 20s and 4 attempts (last result: 0)"
    assert isinstance(err, TimeoutError) and isinstance(err, StepFailed)


def test_wait_ends_even_if_the_clock_stops_short_of_the_deadline():
    class Coarse(Clock):
        def sleep(self, seconds: float) -> None:  # drops anything under a millisecond
            super().sleep(int(seconds * 1000) / 1000)

    clock = Coarse()
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: False, 1.0005, 0.25, clock=clock, jitter=False)
    assert info.value.attempts == 4 and clock.t == pytest.approx(1.0)


def test_none_result_gets_a_hint():
    with pytest.raises(WaitTimeout, match="must return something truthy"):
        wait_until(lambda: None, 0, clock=Clock())


def test_errors_are_retried_and_reported():
    clock = Clock()
    attempts = {"n": 0}

    def check():
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionRefusedError("connection refused")
        return True

    assert wait_until(check, 60, clock=clock, jitter=False) is True
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: 1 / 0, 5, clock=clock, jitter=False)
    assert "last error: ZeroDivisionError: division by zero" in str(info.value)
    assert isinstance(info.value.error, ZeroDivisionError)


@pytest.mark.parametrize(
    ("error", "retry_on"),
    [
        (TypeError("check() takes 0 arguments"), (Exception,)),
        (NameError("name 'reponse' is not defined"), (Exception,)),
        (StepTimeout("step 'health' timed out after 30s"), (Exception,)),
        (ValueError("bad"), (ConnectionError,)),
    ],
)
def test_bugs_timeouts_and_unlisted_errors_propagate_at_once(error, retry_on):
    clock = Clock()

    def check():
        raise error

    with pytest.raises(type(error)):
        wait_until(check, 60, clock=clock, retry_on=retry_on)
    assert clock.sleeps == []


def test_progress_is_reported_before_each_sleep():
    calls = []
    wait_until(
        after(2),
        10,
        1.0,
        clock=Clock(),
        jitter=False,
        message="green healthy",
        progress=lambda m, f: calls.append((m, f)),
    )
    assert calls == [
        ("green healthy (1 attempts, 0s)", 0.0),
        ("green healthy (2 attempts, 1s)", 0.1),
    ]


def test_timeout_zero_checks_once():
    clock = Clock()
    with pytest.raises(WaitTimeout):
        wait_until(lambda: False, 0, clock=clock, progress=lambda m, f: None)
    assert clock.sleeps == []


@pytest.mark.parametrize("kwargs", [{"timeout": -1}, {"backoff": 0}, {"max_backoff": -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        wait_until(lambda: True, **{"timeout": 1, **kwargs}, clock=Clock())


def test_await_until_accepts_async_and_sync_checks():
    clock = Clock()
    state = {"n": 0}

    async def check():
        state["n"] += 1
        return state["n"] >= 3

    assert asyncio.run(await_until(check, 30, clock=clock, jitter=False)) is True
    assert clock.sleeps == [1, 2]
    assert asyncio.run(await_until(after(1, 5), 30, clock=clock)) == 5

    async def refused():
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeout, match="last error: ConnectionError: refused"):
        asyncio.run(await_until(refused, 3, clock=clock))
    unhealthy = ProbeResult("unhealthy", "GET /health -> 503")
    with pytest.raises(WaitTimeout, match=r"last result: unhealthy: GET /health -> 503"):
        asyncio.run(await_until(lambda: unhealthy, 3, clock=clock))


def test_probe_result_is_truthy_only_when_healthy():
    healthy, unhealthy, ambiguous = (ProbeResult(o, "d") for o in Outcome)
    assert [bool(healthy), bool(unhealthy), bool(ambiguous)] == [True, False, False]
    assert ambiguous.ambiguous and unhealthy.unhealthy and healthy.healthy
    assert ProbeResult("healthy").outcome is Outcome.HEALTHY
    assert healthy.decisive() is healthy and unhealthy.decisive() is unhealthy
    with pytest.raises(Ambiguous, match="probe was ambiguous: d"):
        ambiguous.decisive()
    with pytest.raises(ValueError):
        ProbeResult("fine")


@dataclasses.dataclass
class Holder:
    output: object


def test_probe_result_is_stored_as_json_and_comes_back():
    result = ProbeResult("ambiguous", "GET /health timed out", {"tries": 3})
    stored = json.loads(json.dumps(result))
    assert stored == {
        "outcome": "ambiguous",
        "detail": "GET /health timed out",
        "value": {"tries": 3},
    }
    again = ProbeResult.of(stored)
    assert again.ambiguous and again == result and ProbeResult.of(again) is again
    assert repr(again) == "ProbeResult('ambiguous', 'GET /health timed out', {'tries': 3})"
    assert dataclasses.asdict(Holder(result)) == {"output": result}
    assert copy.deepcopy(result) == result and pickle.loads(pickle.dumps(result)).ambiguous
    with pytest.raises(ValueError):
        ProbeResult({"outcome": "fine"})
    with pytest.raises(TypeError, match="not a probe result"):
        ProbeResult.of({"status": "ok"})


URL = "http://web-green.internal/health"


@pytest.mark.parametrize(
    ("response", "outcome", "detail"),
    [
        (httpx.Response(200), Outcome.HEALTHY, f"GET {URL} -> 200"),
        (httpx.Response(500), Outcome.UNHEALTHY, f"GET {URL} -> 500"),
        (httpx.Response(503), Outcome.UNHEALTHY, f"GET {URL} -> 503"),
        (httpx.Response(302, headers={"location": "/login"}), Outcome.AMBIGUOUS,
         f"GET {URL} -> 302 (expected [200])"),
        (httpx.Response(404), Outcome.AMBIGUOUS, "-> 404"),
        (httpx.ConnectTimeout("timed out"), Outcome.AMBIGUOUS,
         f"GET {URL} timed out: ConnectTimeout: timed out"),
        (httpx.ReadTimeout("read timed out"), Outcome.AMBIGUOUS, "timed out: ReadTimeout"),
        (httpx.ConnectError("connection refused"), Outcome.AMBIGUOUS,
         f"GET {URL} failed: ConnectError: connection refused"),
    ],
)  # fmt: skip
def test_http_probe(response, outcome, detail):
    with respx.mock, httpx.Client() as client:
        route = respx.get(URL)
        if isinstance(response, Exception):
            route.side_effect = response
        else:
            route.return_value = response
        result = http_probe(URL, client=client, timeout=2)
    assert result.outcome is outcome
    assert detail in result.detail


@pytest.mark.parametrize(
    ("body", "outcome", "value"),
    [
        (
            {"status": "ok", "version": "2.4.1"},
            Outcome.HEALTHY,
            {"status": "ok", "version": "2.4.1"},
        ),
        ({"status": "degraded"}, Outcome.UNHEALTHY, {"status": "degraded"}),
        ("<html>maintenance</html>", Outcome.AMBIGUOUS, 200),
    ],
)
def test_http_probe_checks_the_body(body, outcome, value):
    with respx.mock, httpx.Client() as client:
        if isinstance(body, str):
            respx.get(URL).respond(200, text=body)
        else:
            respx.get(URL).respond(200, json=body)
        result = http_probe(URL, client=client, expect=lambda b: b["status"] == "ok")
    assert result.outcome is outcome and result.value == value


def test_http_probe_accepts_several_statuses_and_async_clients():
    with respx.mock:
        respx.get(URL).respond(204)

        async def go():
            async with httpx.AsyncClient() as client:
                return await ahttp_probe(URL, client=client, expect_status={200, 204})

        assert asyncio.run(go()).healthy
        respx.get(URL).side_effect = httpx.ConnectError("refused")

        async def down():
            async with httpx.AsyncClient() as client:
                return await ahttp_probe(URL, client=client)

        assert asyncio.run(down()).ambiguous


def test_http_probe_plugs_into_wait_until():
    with respx.mock, httpx.Client() as client:
        respx.get(URL).mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(200)]
        )
        result = wait_until(lambda: http_probe(URL, client=client), 60, clock=Clock())
    assert result.healthy


@pytest.fixture
def shell() -> Shell:
    return Shell(SystemClock())


@pytest.mark.parametrize(
    ("cmd", "outcome", "detail"),
    [
        ("true", Outcome.HEALTHY, "true: exit 0"),
        ("echo replica lag 30s >&2; exit 1", Outcome.UNHEALTHY, "exit 1: replica lag 30s"),
        ("exit 127", Outcome.AMBIGUOUS, "(command not found)"),
        ("exit 126", Outcome.AMBIGUOUS, "(command not executable)"),
        ("kill -9 $$", Outcome.AMBIGUOUS, "exit -9 (command killed by a signal)"),
        ("sleep 5", Outcome.AMBIGUOUS, "command timed out after 0.2s"),
    ],
)
def test_command_probe(shell, cmd, outcome, detail):
    result = command_probe(cmd, shell=shell, timeout=0.2 if "sleep" in cmd else None)
    assert result.outcome is outcome
    assert detail in result.detail


def test_command_probe_expected_code_and_unrunnable_commands():
    def fake(cmd, check):
        assert check is False
        return ShellResult(cmd, 3, "", "")

    assert command_probe("pg_isready", shell=fake, expect_returncode=3).healthy

    def broken(cmd, check):
        raise FileNotFoundError(2, "No such file or directory", cmd[0])

    result = command_probe(["pg_isready"], shell=broken)
    assert result.ambiguous and "could not run" in result.detail
