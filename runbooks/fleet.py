"""Roll a release of the ``web`` service to four hosts over SSH, two at a time.

The hosts come from ``fleet.ini`` next to this file (``inventory = ...`` in the project's
configuration, or ``--inventory FILE``, take precedence). Each host gets its own steps,
``release.deploy[web-3]`` and ``release.health[web-3]``; after each batch, ``release.batch-N``
checks the failure budget: one host may fail (it is recorded as ``host_failed`` and the rollout
goes on), a second one stops the rollout and rolls every deployed host back, newest batch first.

Try it::

    runbook list runbooks/fleet.py
    runbook exec runbooks/fleet.py -p version=2.4.1
    runbook exec runbooks/fleet.py -p version=2.4.1 --limit web-3   # one host only
    runbook retry RUN_ID                 # again, on the hosts that failed or were unreached

Commands go through the ``ssh`` resource (the runbook-ssh plugin) as argv lists: a version
string can never become shell code on the hosts.
"""

from __future__ import annotations

from runbook import param, step
from runbook.strategies import rolling

inventory = "fleet.ini"

version = param("version", help="release to install, e.g. 2.4.1")


def install(host, ssh, params):
    """Deploy callback, once per host: ``host`` is a Host (name, address, port, user, vars)."""
    ssh(host, ["sudo", "deployctl", "install", "web", params.version])


def healthy(host, ssh, params):
    """Polled until true: the host answers its health check with the new version."""
    status = ssh(host, ["deployctl", "status", "web"], check=False)
    return status.ok and status.stdout.strip() == params.version


def reinstall_previous(host, ssh):
    """Rollback callback: re-activates the release the host ran before this one."""
    ssh(host, ["sudo", "deployctl", "rollback", "web"])


release = rolling(
    "group:web",
    batch=2,
    max_failures=1,
    deploy=install,
    health=healthy,
    rollback=reinstall_previous,
    health_timeout=120,
    health_backoff=2,
    service="web",
)


@step
def record_release(release, ctx, params):
    """After the last batch passed its budget check: record what is live, and where not."""
    ctx.record_change("web", before=None, after=params.version)
    return {"version": params.version, "failed_hosts": release["failed_total"]}


def _healthy_fake():
    """For ``pytest --runbooks``: hosts answer ``status`` with the version being installed."""
    from runbook.testing import FakeSSH

    fake = FakeSSH()
    fake.on("*", "deployctl status web", stdout="2.4.1\n")
    return fake


TEST = {"params": {"version": "2.4.1"}, "resources": {"ssh": lambda tmp: _healthy_fake()}}
