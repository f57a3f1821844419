"""Canary release of ``web`` behind HAProxy, judged by its error rate in Prometheus.

HAProxy's backend ``web`` has two servers, ``stable`` and ``canary``; the runtime API moves
traffic between them (runbook-haproxy). After each shift the canary bakes while
``runbook.analysis.prometheus`` measures its error ratio: a failing canary aborts in the middle of
the bake (canary weight 0, read back from HAProxy, and only then the canary is uninstalled); a
metric with no data pauses the run at ``release.analyze-<weight>`` for a human.

Try it against a local HAProxy and Prometheus::

    # runbook.toml
    router = "haproxy://127.0.0.1:9999"   # stats socket ipv4@127.0.0.1:9999 level admin

    runbook exec runbooks/canary_haproxy.py -p prometheus_url=http://127.0.0.1:9090
    runbook router show web

The integration tests of plugins/runbook-haproxy run exactly this file against a real HAProxy
and a real Prometheus (tests/test_canary_real.py). ``pytest --runbooks runbooks`` runs it offline
with the fakes below.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from runbook import analysis, param, rollback, step
from runbook.strategies import canary

version = param("version", default="2.0.0", help="release on the canary server")
prometheus_url = param("prometheus_url", default="http://127.0.0.1:9090")
error_query = param(
    "error_query",
    default='max(app_error_ratio{server="canary"})',
    help="PromQL giving the canary's share of 5xx answers, 0-1",
)
weights = param("weights", type=list, default=[20, 50, 100], help="canary percentages")
bake = param("bake", type=float, default=60, help="seconds at each weight")
interval = param("interval", type=float, default=10, help="seconds between measurements")
count = param("count", type=int, default=3, help="measurements per weight")

# One release of web per environment at a time.
lock = "web-release-{env}"


@step(reversible=True)
def deploy_canary(shell, params):
    """Put the new version on the canary server (it has no traffic yet)."""
    shell(["deployctl", "install", "web-canary", params.version])
    return {"version": params.version}


@rollback(deploy_canary)
def uninstall_canary(shell):
    # Runs only after the canary's weight is confirmed 0 on HAProxy (canary's ordered abort).
    shell("deployctl uninstall web-canary")


error_rate = analysis.prometheus(
    error_query,
    success="result < 0.01",
    failure="result >= 0.05",
    url=prometheus_url,
    interval=interval,
    count=count,
)

release = canary(
    "web",
    weights=weights,
    bake=bake,
    analysis=error_rate,
    baseline="stable",
    canary="canary",
    after=[deploy_canary],
)


@step
def announce(release, log):
    log.info("web: canary at %s%% on %s", release["weight"], release["weights"])
    return release["weights"]


def _healthy_prometheus(tmp: Path) -> httpx.Client:
    """``pytest --runbooks``: a Prometheus whose canary never errs."""

    def answer(request: httpx.Request) -> httpx.Response:
        sample = {"metric": {"server": "canary"}, "value": [0, "0"]}
        data = {"resultType": "vector", "result": [sample]}
        return httpx.Response(200, json={"status": "success", "data": data})

    return httpx.Client(transport=httpx.MockTransport(answer))


TEST = {"resources": {"http": _healthy_prometheus}}
