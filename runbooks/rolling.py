"""Rolling upgrade of the ``api`` hosts behind HAProxy, two hosts per batch.

For each host: drain it in the load balancer, install the release over ssh, wait until its
``/health`` answers 200 with ``{"status": "ok"}``, put it back. Each host has its own steps
(``release.deploy[api-01]``, ``release.health[api-01]``); with the default failure budget of 0, a
failed host stops the rollout after its batch, and every host that was deployed is rolled back,
newest batch first, with ``deployctl rollback`` (which re-activates the previous release kept on
the host). ``runbooks/fleet.py`` shows the same over the ``ssh`` resource with an inventory and a
failure budget.

Try it::

    runbook exec runbooks/rolling.py -p version=5.2.0 --dry-run   # batches, in order
    runbook exec runbooks/rolling.py -p version=5.2.0

The host list is fixed when the runbook loads (the per-host steps must exist for ``list`` and
``graph``); with an inventory, ``rolling("group:api", ...)`` selects from it (docs/fleets.md).
"""

from __future__ import annotations

from runbook import param, resource, step
from runbook.probes import http_probe
from runbook.strategies import rolling

HOSTS = ["api-01", "api-02", "api-03", "api-04", "api-05"]
HAPROXY_SOCKET = "/run/haproxy/admin.sock"

version = param("version", help="release to install, e.g. 5.2.0")

lock = "api-release-{env}"


class HAProxy:
    """Drains and enables servers through the HAProxy runtime API (over the ``shell``)."""

    def __init__(self, shell, backend: str) -> None:
        self.shell = shell
        self.backend = backend

    def _command(self, host, command: str) -> None:
        self.shell(["ssh", host.name, f"echo '{command}' | sudo socat stdio {HAPROXY_SOCKET}"])

    def drain(self, host) -> None:
        self._command(host, f"set server {self.backend}/{host} state drain")

    def enable(self, host) -> None:
        self._command(host, f"set server {self.backend}/{host} state ready")


@resource(fake=lambda shell: HAProxy(shell, backend="api"))  # in tests: over the fake shell
def lb(shell) -> HAProxy:
    return HAProxy(shell, backend="api")


def install(host, lb, shell, params):
    """Deploy callback: called once per host, with ``host`` (a ``Host``) and ``batch`` supplied."""
    lb.drain(host)
    shell(["ssh", host.name, "sudo", "deployctl", "install", "api", params.version])


def healthy(host, http, lb):
    """Health callback: polled until it returns something truthy (a healthy ProbeResult).

    Only a healthy answer puts the host back in the pool; an unhealthy or ambiguous one keeps
    polling until ``health_timeout``, then fails the host.
    """
    result = http_probe(
        f"http://{host.address}:8080/health",
        client=http,
        expect=lambda body: body.get("status") == "ok",
    )
    if result.healthy:
        lb.enable(host)
    return result


def reinstall_previous(host, lb, shell, params):
    """Rollback callback: runs for every host whose deploy succeeded, newest batch first."""
    lb.drain(host)
    shell(["ssh", host.name, "sudo", "deployctl", "rollback", "api", "--from", params.version])
    lb.enable(host)


release = rolling(
    HOSTS,
    batch=2,
    max_failures=0,  # any failed host stops the rollout and rolls back
    deploy=install,
    health=healthy,
    rollback=reinstall_previous,
    health_timeout=180,
    health_backoff=2,
    service="api",
)


@step
def record_release(release, ctx, params):
    """Runs only after the last batch passed its budget check; its output is the release record."""
    ctx.record_change("api", before=None, after=params.version)
    return {"version": params.version, "hosts": HOSTS}


TEST = {"params": {"version": "5.2.0"}}
