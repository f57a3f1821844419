"""Canary release of ``web``: deploy the canary track, shift traffic 5 -> 25 -> 50 -> 100 %.

After every shift the canary bakes for five minutes on the run's clock, then Prometheus decides:
the canary's 5xx ratio over the bake window must stay under ``max_error_rate``. A failed, or
*ambiguous* (no data, Prometheus down), analysis aborts: all traffic goes back to ``stable`` and
the canary deployment is scaled to zero. A human approves before half the traffic moves.

Try it::

    runbook exec runbooks/canary.py -p version=2.4.1 --dry-run   # the plan, live weights
    runbook exec runbooks/canary.py -p version=2.4.1             # pauses before 50% (exit 3)
    runbook approve RUN_ID --step release.approve-50 --comment "25% clean for 5 min"
    runbook resume RUN_ID

The ``router`` resource comes from configuration (``[tool.runbook] router = "file://..."`` or a
mesh plugin); ``deployctl`` stands for your deploy tool. In a test, ``Runner(resources={"router":
FakeRouter(...), "shell": FakeShell(), "metrics": ...})`` runs all of it offline; see
tests/strategies/test_examples.py.
"""

from __future__ import annotations

import httpx

from runbook import param, probe, resource, rollback, step
from runbook.probes import Outcome, ProbeResult
from runbook.strategies import canary

SERVICE = "web"

version = param("version", help="release to put on the canary track, e.g. 2.4.1")
max_error_rate = param("max_error_rate", type=float, default=0.01, help="max 5xx ratio, 0-1")
prometheus_url = param("prometheus_url", default="http://prometheus.internal:9090")

# One release of web per environment at a time: a second run waits or exits 5.
lock = "web-release-{env}"


class Prometheus:
    """Just enough of the Prometheus HTTP API to answer "is this track failing?".

    Every way of not knowing (HTTP error, unexpected JSON, no samples because the track got no
    traffic) is ``ambiguous``, which fails the analysis: a canary is promoted on evidence only.
    """

    def __init__(self, http: httpx.Client, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")

    def error_ratio(self, track: str, window: str, limit: float) -> ProbeResult:
        selector = f'job="{SERVICE}",track="{track}"'
        query = (
            f'sum(rate(http_requests_total{{{selector},code=~"5.."}}[{window}]))'
            f" / sum(rate(http_requests_total{{{selector}}}[{window}]))"
        )
        try:
            response = self.http.get(f"{self.url}/api/v1/query", params={"query": query})
            response.raise_for_status()
            samples = response.json()["data"]["result"]
            ratio = float(samples[0]["value"][1]) if samples else None
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            return ProbeResult(Outcome.AMBIGUOUS, f"prometheus query failed: {exc}")
        if ratio is None or ratio != ratio:  # no samples, or 0/0 = NaN: no traffic to judge
            return ProbeResult(Outcome.AMBIGUOUS, f"no {track} traffic in the last {window}")
        outcome = Outcome.HEALTHY if ratio <= limit else Outcome.UNHEALTHY
        return ProbeResult(outcome, f"{track} 5xx ratio {ratio:.4f} (limit {limit})", ratio)


# In tests the same client queries the test's fake http (DESIGN 18: every resource is faked).
@resource(fake=lambda http, params: Prometheus(http, params.prometheus_url))
def metrics(http, params) -> Prometheus:
    return Prometheus(http, params.prometheus_url)


@probe
def traffic(router):
    """The split before we start; a probe, so ``--dry-run`` shows the real one."""
    return router.weights(SERVICE)


@step(reversible=True, timeout=900)
def deploy_canary(traffic, shell, params):
    """Roll the new version onto the canary track; it gets no traffic until the first shift."""
    shell(["deployctl", "deploy", f"{SERVICE}-canary", params.version, "--wait"])
    return {"version": params.version, "traffic_before": traffic}


@rollback(deploy_canary)
def remove_canary(shell):
    shell(["deployctl", "scale", f"{SERVICE}-canary", "0"])


def error_rate_ok(metrics, weight, params):
    """The analysis: called after each bake with the weight just reached (plus injection)."""
    return metrics.error_ratio("canary", "5m", params.max_error_rate)


# Expands into release.shift-5, release.bake-5, release.analyze-5, ..., release.approve-50, ...
release = canary(
    SERVICE,
    weights=[5, 25, 50, 100],
    bake=300,
    analysis=error_rate_ok,
    pause_at=[50],
    after=[deploy_canary],
)


@step
def promote(release, shell, router, params, ctx):
    """The canary took all traffic and stayed healthy: make it the new stable.

    Not reversible on purpose: if this fails half-way, the rollbacks of the shifts send traffic
    to ``stable``, which then runs either the old or the new version, both proven healthy.
    """
    shell(["deployctl", "deploy", f"{SERVICE}-stable", params.version, "--wait"])
    before = router.weights(SERVICE)
    router.set_weights(SERVICE, {"stable": 100, "canary": 0})
    ctx.record_change(f"router:{SERVICE}", before, {"stable": 100, "canary": 0})
    shell(["deployctl", "scale", f"{SERVICE}-canary", "0"])
    return {"version": params.version}


# -- offline test wiring (pytest --runbooks runbooks/) ------------------------------------------
# A Prometheus that reports a healthy canary, so the collected test item exercises every step.


def _healthy_prometheus(_tmp: object) -> httpx.Client:
    body = {"status": "success", "data": {"result": [{"value": [0, "0.001"]}]}}
    return httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, json=body)))


TEST = {"params": {"version": "2.4.1"}, "resources": {"http": _healthy_prometheus}}
