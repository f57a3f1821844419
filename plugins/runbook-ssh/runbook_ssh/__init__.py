"""runbook-ssh: the ``ssh`` resource, commands on the hosts of a fleet over SSH (asyncssh).

``ssh(host, ["deployctl", "install", svc])`` or ``ssh(host, "deployctl install {svc}", svc=svc)``
runs on ``host`` (a ``Host`` from the ``hosts`` resource or ``rolling``, or a name in the
inventory) with the quoting, the unsafe-command refusal, the result and the errors of ``shell``.
One pooled connection per host per run; host keys checked against ``known_hosts``. See
docs/fleets.md in the runbook repository.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from runbook.hookspecs import hookimpl

__version__ = "0.2.0"


def ssh_resource(ctx: Any, clock: Any, hosts: Any = None) -> Iterator[Any]:
    """The ``ssh`` resource, imported when a run first asks for it: asyncssh takes longer to
    import than runbook takes to load a 1,000-step runbook, and every collection and every
    command asks this plugin for its resource names."""
    from runbook_ssh import resource

    yield from resource.ssh_resource(ctx, clock, hosts)


@hookimpl
def runbook_resources() -> dict[str, Any]:
    return {"ssh": ssh_resource}


@hookimpl
def runbook_config_keys() -> list[str]:
    from runbook_ssh.settings import KEYS

    return list(KEYS)


@hookimpl
def runbook_configure(config: Any) -> None:
    from runbook_ssh.settings import Settings

    Settings.from_config(config)  # a bad value is a ConfigError before anything runs
