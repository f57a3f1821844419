"""One runbook, three paths: dev deploys straight away, staging adds a smoke test, and prod adds a
four-eyes change approval and a canary in front of the release.

The path is chosen by ``when=`` conditions on the environment, so ``runbook list`` shows every
step for every env, and ``--dry-run`` shows which ones this env would run. Per-env values
(replicas, protection, approvers) come from configuration, not from the code; the
``[tool.runbook.env.*]`` sections this runbook expects are in docs/strategies.md
("One runbook, several environments").

Try it::

    runbook exec runbooks/multi_env.py --env dev -p version=3.1.0
    runbook exec runbooks/multi_env.py --env staging -p version=3.1.0 --dry-run
    runbook exec runbooks/multi_env.py --env prod -p version=3.1.0     # pauses: two approvers
"""

from __future__ import annotations

import httpx

from runbook import Approval, param, resource, rollback, step
from runbook.probes import Outcome, ProbeResult, http_probe
from runbook.strategies import canary

SERVICE = "orders"

version = param("version", help="release to deploy, e.g. 3.1.0")
# Set per env in config ([tool.runbook.env.prod] params = { replicas = 6 }); -p overrides.
replicas = param("replicas", type=int, default=1, choices=range(1, 21))
max_p99_ms = param("max_p99_ms", type=float, default=300.0, help="canary p99 latency limit")

lock = "orders-release-{env}"


def is_prod(env) -> bool:
    return env == "prod"


class SLO:
    """Reads the canary's service-level indicators from the metrics gateway."""

    def __init__(self, http: httpx.Client, env: str) -> None:
        self.http = http
        self.base = f"https://slo.{env}.example.com/api/{SERVICE}"

    def p99(self, track: str, limit_ms: float) -> ProbeResult:
        try:
            data = self.http.get(f"{self.base}/{track}", params={"window": "10m"}).json()
            p99 = float(data["p99_ms"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return ProbeResult(Outcome.AMBIGUOUS, f"no SLO data for {track}: {exc}")
        outcome = Outcome.HEALTHY if p99 <= limit_ms else Outcome.UNHEALTHY
        return ProbeResult(outcome, f"{track} p99 {p99:.0f} ms (limit {limit_ms:.0f})", p99)


@resource(fake=lambda http, env: SLO(http, env))  # in tests: over the fake http
def slo(http, env) -> SLO:
    return SLO(http, env)


@step(approval=Approval(min=2, allow_self=False), when=is_prod)
def change_approved(ctx, params):
    """Prod only: two people other than the one running the release approve it."""
    return {"version": params.version, "requested_by": ctx.actor}


@step(reversible=True, timeout=900, after=[change_approved])
def deploy(shell, params, env):
    """dev/staging replace the stable track; prod deploys to the canary track first."""
    track = "canary" if env == "prod" else "stable"
    shell(
        [
            "deployctl",
            "deploy",
            f"{SERVICE}-{track}",
            params.version,
            "--env",
            env,
            "--replicas",
            str(params.replicas),
            "--wait",
        ]
    )
    return {"track": track, "version": params.version}


@rollback(deploy)
def undeploy(deploy, shell, env):
    # None when deploy itself failed (it may have half-happened): the track follows from env
    deploy = deploy or {"track": "canary" if env == "prod" else "stable"}
    shell(["deployctl", "rollback", f"{SERVICE}-{deploy['track']}", "--env", env])


@step(when=lambda env: env != "dev", retries=2, backoff=5.0)
def smoke(deploy, http, env):
    """staging and prod: the new pods answer. Ambiguous (timeout, redirect) is a failure too:
    ``decisive()`` raises rather than let "could not tell" pass as healthy."""
    url = f"https://{SERVICE}-{deploy['track']}.{env}.example.com/health"
    result = http_probe(url, client=http).decisive()
    assert result.healthy, result.detail
    return {"url": url, "detail": result.detail}


def p99_ok(slo, weight, params):
    return slo.p99("canary", params.max_p99_ms)


# Prod only: the whole group carries when=is_prod, so in dev and staging it is skipped as one.
release = canary(
    SERVICE, weights=[10, 50, 100], bake=600, analysis=p99_ok, after=[smoke], when=is_prod
)


@step(when=is_prod)
def promote(release, shell, router, params, env, ctx):
    """The canary held 100% for a full bake: make it stable and move traffic back to stable."""
    shell(["deployctl", "deploy", f"{SERVICE}-stable", params.version, "--env", env, "--wait"])
    before = router.weights(SERVICE)
    router.set_weights(SERVICE, {"stable": 100, "canary": 0})
    ctx.record_change(f"router:{SERVICE}", before, {"stable": 100, "canary": 0})
    return {"version": params.version}


@step(after=[smoke, promote])
def announce(notify, params, env):
    """Every env ends here; a skipped ``after=`` step counts as done."""
    notify(f"{SERVICE} {params.version} is live in {env}", severity="info")
    return {"version": params.version, "env": env}


TEST = {"params": {"version": "3.1.0"}}
