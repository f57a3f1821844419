"""canary(..., analysis=prometheus(...)) run by the real engine with a fake clock and a scripted
Prometheus (the run's ``http`` resource): pass, fail during the bake with an ordered and
verified abort, no data pausing at ``analyze-W`` (approve continues, deny aborts), and every
measurement in the audit."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from runbook.testing.router import FakeRouter

SOURCE = """
from runbook import analysis, rollback, step
from runbook.strategies import canary


@step(reversible=True)
def stage(shell):
    shell("deployctl stage web 2.0")


@rollback(stage)
def unstage(shell):
    shell("deployctl unstage web 2.0")


error_rate = analysis.prometheus(
    'app_error_ratio{server="canary"}', url="http://prometheus.test:9090",
    interval=30, count=3,
)
release = canary("web", weights=[20, 100], bake=BAKE, analysis=error_rate, after=[stage])


@step
def verify(release):
    return release
"""


class FakePrometheus:
    """Answers ``/api/v1/query`` with the next scripted value: a number, None (no data) or an
    exception; the last one repeats."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)
        self.queries: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.queries.append(request.url.params["query"])
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if isinstance(value, Exception):
            raise httpx.ConnectError(str(value), request=request)
        result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def write(tmp_path: Path, bake: int = 60) -> Path:
    path = tmp_path / "release.py"
    path.write_text(textwrap.dedent(SOURCE.replace("BAKE", str(bake))))
    return path


@pytest.fixture(autouse=True)
def on_stable(fake_router: FakeRouter) -> None:
    fake_router.set_weights("web", {"stable": 100, "canary": 0})
    fake_router.history.clear()


def run(runbook_runner: Any, path: Path, prom: FakePrometheus, **resources: Any) -> Any:
    return runbook_runner.runner(resources={"http": prom.client(), **resources}).run(path)


def kinds(result: Any, *wanted: str) -> list[tuple[str, str | None]]:
    return [(e.kind, e.step) for e in result.audit if not wanted or e.kind in wanted]


def test_passing_analysis_promotes_and_records_every_measurement(
    runbook_runner, fake_router, fake_clock, tmp_path
):
    prom = FakePrometheus(0.001)
    result = run(runbook_runner, write(tmp_path, bake=60), prom)
    assert result.status == "succeeded", result.error
    statuses = {n: s.status for n, s in result.steps.items()}
    assert statuses == {
        "stage": "succeeded",
        "release.shift-20": "succeeded",
        "release.measure-20": "succeeded",
        "release.analyze-20": "skipped",  # the gate only runs on an inconclusive verdict
        "release.shift-100": "succeeded",
        "release.measure-100": "succeeded",
        "release.analyze-100": "skipped",
        "release.confirm": "succeeded",
        "verify": "succeeded",
    }
    assert fake_router.peek("web") == {"canary": 100, "stable": 0}
    measured = [e for e in result.audit if e.kind == "analysis_measured"]
    assert [(e.step, e.data["weight"], e.data["value"], e.data["outcome"]) for e in measured] == [
        ("release.measure-20", 20, 0.001, "pass")] * 3 + [
        ("release.measure-100", 100, 0.001, "pass")] * 3  # fmt: skip
    assert all(e.data["query"] == 'app_error_ratio{server="canary"}' for e in measured)
    assert len(prom.queries) == 6
    # count * interval = 90 s > bake: each weight measures for 90 s, every 30 s
    assert sum(fake_clock.sleeps) == pytest.approx(180)
    assert result.steps["verify"].output == {
        "service": "web",
        "weight": 100,
        "weights": {"stable": 0, "canary": 100},
    }
    assert result.steps["release.measure-20"].output["outcome"] == "pass"


def test_failing_analysis_aborts_during_the_bake_weight_zero_confirmed_before_rollbacks(
    runbook_runner, fake_router, fake_clock, tmp_path
):
    prom = FakePrometheus(0.001, 0.2, 0.3)  # failure_limit=1: the second failure decides
    result = run(runbook_runner, write(tmp_path, bake=600), prom)
    assert result.status == "rolled_back"
    assert result.steps["release.measure-20"].status == "failed"
    assert "fail: 2 of 3 measurements failed (limit 1)" in result.steps["release.measure-20"].error
    assert sum(fake_clock.sleeps) == pytest.approx(90)  # aborted 90 s into a 600 s bake
    assert fake_router.peek("web") == {"canary": 0, "stable": 100}
    order = [
        (e.kind, e.step, e.data.get("after"))
        for e in result.audit
        if e.kind in ("rollback_started", "rollback_succeeded", "change_recorded")
    ]
    assert order == [
        ("change_recorded", "release.shift-20", {"stable": 80, "canary": 20}),
        ("rollback_started", "release.shift-20", "succeeded"),
        ("change_recorded", "release.shift-20", {"stable": 100, "canary": 0}),  # read back
        ("rollback_succeeded", "release.shift-20", None),
        ("rollback_started", "stage", "succeeded"),
        ("rollback_succeeded", "stage", None),
    ]
    assert runbook_runner.shell.calls == ["deployctl stage web 2.0", "deployctl unstage web 2.0"]
    assert [e.data["outcome"] for e in result.audit if e.kind == "analysis_measured"] == [
        "pass",
        "fail",
        "fail",
    ]


class StuckRouter(FakeRouter):
    """Accepts every write but keeps 5% on the canary: an abort that did not take."""

    def set_weights(self, service: str, weights: dict[str, int]) -> None:
        if weights.get("canary") == 0:
            weights = {"canary": 5, "stable": 95}
        super().set_weights(service, weights)


def test_unconfirmed_abort_halts_the_rollback_before_the_deploy_is_undone(runbook_runner, tmp_path):
    router = StuckRouter({"web": {"stable": 100, "canary": 0}})
    prom = FakePrometheus(0.5)
    result = run(runbook_runner, write(tmp_path), prom, router=router)
    assert result.status == "rollback_failed"
    assert (
        "still sends 5% to canary after the abort"
        in result.steps["release.shift-20"].rollback_error
    )
    assert result.steps["stage"].status == "succeeded"  # not undone under live canary traffic
    assert runbook_runner.shell.calls == ["deployctl stage web 2.0"]
    assert ("rollback_started", "stage") not in kinds(result)


def test_no_data_pauses_at_the_analyze_gate_then_approval_continues(
    runbook_runner, fake_router, tmp_path
):
    prom = FakePrometheus(None)
    path = write(tmp_path)
    first = runbook_runner.runner(actor="alice", resources={"http": prom.client()})
    paused = first.run(path)
    assert paused.status == "paused"
    gate = paused.steps["release.analyze-20"]
    assert gate.status == "awaiting_approval"
    assert paused.steps["release.shift-100"].status == "pending"
    assert fake_router.peek("web") == {"canary": 20, "stable": 80}  # never promoted
    requested = [e for e in paused.audit if e.kind == "approval_requested"]
    assert len(requested) == 1 and requested[0].step == "release.analyze-20"
    reason = requested[0].data["reason"]
    assert reason == (
        "canary analysis prometheus('app_error_ratio{server=\"canary\"}') for web at 20% "
        "inconclusive: 2 of 2 measurements inconclusive (limit 1); "
        "measurements: none (no data), none (no data)"
    )
    assert gate.reason == reason
    measured = [e.data for e in paused.audit if e.kind == "analysis_measured"]
    assert [(m["value"], m["outcome"], m["detail"]) for m in measured] == [
        (None, "inconclusive", "no data")
    ] * 2

    prom.values = [0.001]  # the metric shows up; the human has looked and approves
    second = runbook_runner.runner(actor="bob", resources={"http": prom.client()})
    second.approve(paused.run_id, actor="bob", comment="dashboards look clean")
    resumed = second.resume(paused.run_id)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.steps["release.analyze-20"].status == "succeeded"
    assert resumed.steps["release.analyze-20"].output["approved"] is True
    assert resumed.steps["release.analyze-100"].status == "skipped"
    assert fake_router.peek("web") == {"canary": 100, "stable": 0}


def test_no_data_then_deny_aborts_to_zero(runbook_runner, fake_router, tmp_path):
    prom = FakePrometheus(Exception("connection refused"))
    first = runbook_runner.runner(actor="alice", resources={"http": prom.client()})
    paused = first.run(write(tmp_path))
    assert paused.status == "paused"
    measured = [e.data for e in paused.audit if e.kind == "analysis_measured"]
    assert measured[0]["detail"] == "Prometheus unreachable: ConnectError: connection refused"
    denied = runbook_runner.runner(actor="bob").deny(
        paused.run_id, actor="bob", reason="no metrics"
    )
    assert denied.status == "rolled_back"
    assert fake_router.peek("web") == {"canary": 0, "stable": 100}
    assert denied.steps["release.shift-20"].status == "rolled_back"


def test_router_failing_during_the_abort_halts_the_rollback(runbook_runner, fake_router, tmp_path):
    fake_router.fail("set_weights", RuntimeError("runtime API down"), after=1)  # the abort's
    result = run(runbook_runner, write(tmp_path), FakePrometheus(0.5))
    assert result.status == "rollback_failed"
    error = result.steps["release.shift-20"].rollback_error
    assert error == (
        "RollbackHalted: could not take web traffic off canary: RuntimeError: runtime API down"
    )
    assert result.steps["stage"].status == "succeeded"
    assert runbook_runner.shell.calls == ["deployctl stage web 2.0"]
