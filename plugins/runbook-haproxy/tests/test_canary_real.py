"""runbooks/canary_haproxy.py against a real HAProxy and a real Prometheus (no mocks).

Traffic flows from a background thread through HAProxy to two local HTTP servers; an exporter
publishes each server's real 5xx share; Prometheus scrapes it every second; the canary's
analysis queries Prometheus over HTTP. Real seconds: each test bakes 2 s per weight.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra import Backend, Exporter, HAProxy, Prometheus, Traffic, split
from runbook_haproxy.router import HAProxyRouter

from runbook.runner import Runner

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[3] / "runbooks" / "canary_haproxy.py"


class Deployer:
    """The ``shell`` of the runbook: records each deploy command with the canary's weight on
    HAProxy at that moment, read from HAProxy itself."""

    def __init__(self, router: HAProxyRouter) -> None:
        self.router = router
        self.calls: list[tuple[str, int]] = []

    def __call__(self, command: str | list[str], **_: Any) -> None:
        text = command if isinstance(command, str) else shlex.join(command)  # argv or string
        self.calls.append((text, self.router.weights("web")["canary"]))


@pytest.fixture
def test_id(exporter: Exporter, backends: dict[str, Backend]) -> Iterator[str]:
    name = uuid.uuid4().hex[:8]
    exporter.watch(name, backends)
    yield name
    exporter.watched.pop(name, None)


@pytest.fixture
def traffic(haproxy: HAProxy) -> Iterator[Traffic]:
    flow = Traffic(haproxy.port, limit=60)
    yield flow
    flow.stop()


def runner(tmp_path: Path, haproxy: HAProxy, deployer: Deployer, actor: str = "alice") -> Runner:
    return Runner(
        env="prod",
        actor=actor,
        store=f"sqlite:///{tmp_path}/runbook.db",
        audit=[f"jsonl://{tmp_path}/audit.jsonl"],
        locks=f"file://{tmp_path}/locks",
        router=haproxy.url,
        resources={"shell": deployer},
    )


def params(prometheus: Prometheus, query: str, count: int = 2) -> dict[str, str]:
    return {
        "prometheus_url": prometheus.url,
        "error_query": query,
        "weights": "20,100",
        "bake": "2",
        "interval": "1",
        "count": str(count),
    }


def ratio_query(test_id: str) -> str:
    return f'max(app_error_ratio{{test="{test_id}",server="canary"}})'


def measurements(result: Any) -> list[tuple[str | None, Any, str]]:
    return [
        (e.step, e.data["value"], e.data["outcome"])
        for e in result.audit
        if e.kind == "analysis_measured"
    ]


def test_healthy_canary_passes_and_takes_all_traffic(
    tmp_path, haproxy, backends, prometheus, test_id, traffic
):
    query = ratio_query(test_id)
    prometheus.wait_value(query, lambda v: v == 0)
    deployer = Deployer(HAProxyRouter(haproxy.url))
    result = runner(tmp_path, haproxy, deployer).run(EXAMPLE, params=params(prometheus, query))

    assert result.status == "succeeded", result.error
    assert HAProxyRouter(haproxy.url).weights("web") == {"stable": 0, "canary": 100}
    assert result.steps["announce"].output == {"stable": 0, "canary": 100}
    assert [s for s, _, _ in measurements(result)] == ["release.measure-20"] * 2 + [
        "release.measure-100"
    ] * 2
    assert {(v, o) for _, v, o in measurements(result)} == {(0.0, "pass")}
    assert backends["canary"].hits > 0 and backends["canary"].errors == 0
    assert split(haproxy.port, 20) == {"canary": 20}
    assert deployer.calls == [("deployctl install web-canary 2.0.0", 0)]


def test_failing_canary_aborts_weight_zero_confirmed_before_uninstall(
    tmp_path, haproxy, backends, prometheus, test_id, traffic
):
    query = ratio_query(test_id)
    prometheus.wait_value(query, lambda v: v == 0)
    backends["canary"].failing = True  # every request the canary gets from now on is a 500
    deployer = Deployer(HAProxyRouter(haproxy.url))
    # Three measurements: the first may still read a scrape from before the canary had traffic
    # (a pass); the next two fail, more than failure_limit=1.
    given = params(prometheus, query, count=3)
    result = runner(tmp_path, haproxy, deployer).run(EXAMPLE, params=given)

    assert result.status == "rolled_back"
    assert result.steps["release.measure-20"].status == "failed"
    error = result.steps["release.measure-20"].error
    assert error is not None and "measurements failed (limit 1)" in error
    assert result.steps["release.shift-100"].status == "pending"  # never promoted
    assert [o for _, _, o in measurements(result)][-2:] == ["fail", "fail"]
    assert all(v is not None and v >= 0.05 for _, v, o in measurements(result) if o == "fail")

    # HAProxy sends nothing to the canary, and it did so before the canary was uninstalled.
    assert HAProxyRouter(haproxy.url).weights("web") == {"stable": 100, "canary": 0}
    assert split(haproxy.port, 50) == {"stable": 50}
    assert deployer.calls == [
        ("deployctl install web-canary 2.0.0", 0),
        ("deployctl uninstall web-canary", 0),  # the canary's weight when it was uninstalled
    ]
    trail = [(e.kind, e.step, e.data.get("after")) for e in result.audit]
    abort = trail.index(("change_recorded", "release.shift-20", {"stable": 100, "canary": 0}))
    uninstall = trail.index(("rollback_started", "deploy_canary", "succeeded"))
    assert trail.index(("rollback_succeeded", "release.shift-20", None)) < uninstall
    assert abort < uninstall


def test_no_data_pauses_is_approved_and_continues(
    tmp_path, haproxy, backends, prometheus, test_id, traffic
):
    query = f'max(app_error_ratio{{test="{test_id}-missing"}})'  # a series that never exists
    deployer = Deployer(HAProxyRouter(haproxy.url))
    paused = runner(tmp_path, haproxy, deployer).run(EXAMPLE, params=params(prometheus, query))

    assert paused.status == "paused"
    assert paused.steps["release.analyze-20"].status == "awaiting_approval"
    assert HAProxyRouter(haproxy.url).weights("web") == {"stable": 80, "canary": 20}
    requested = [e for e in paused.audit if e.kind == "approval_requested"]
    assert "measurements: none (no data), none (no data)" in requested[0].data["reason"]
    assert measurements(paused) == [("release.measure-20", None, "inconclusive")] * 2

    bob = runner(tmp_path, haproxy, deployer, actor="bob")
    bob.approve(paused.run_id, actor="bob", comment="dashboards are fine")
    again = bob.resume(paused.run_id)  # 100 % has no data either: a second gate
    assert again.status == "paused"
    assert again.steps["release.analyze-100"].status == "awaiting_approval"
    assert HAProxyRouter(haproxy.url).weights("web") == {"stable": 0, "canary": 100}

    bob.approve(again.run_id, actor="bob")
    done = bob.resume(again.run_id)
    assert done.status == "succeeded", done.error
    assert done.steps["release.analyze-20"].output["approved"] is True
    assert done.steps["announce"].output == {"stable": 0, "canary": 100}
    assert deployer.calls == [("deployctl install web-canary 2.0.0", 0)]
