"""runbook-haproxy: the ``haproxy://`` and ``haproxy+unix://`` routers, and ``runbook router``.

``haproxy://127.0.0.1:9999`` talks to HAProxy's runtime API over TCP (``stats socket
ipv4@127.0.0.1:9999 level admin``), ``haproxy+unix:///run/haproxy/admin.sock`` over its unix
socket. A service is a backend; a colour or a canary is a server of that backend.
"""

from __future__ import annotations

from typing import Any

from runbook.hookspecs import Provider, hookimpl

__version__ = "0.2.0"


def _router(url: str, **options: Any) -> Any:
    from runbook_haproxy.router import HAProxyRouter

    return HAProxyRouter.open(url, **options)


def _check(url: str) -> None:
    from runbook_haproxy.runtime import Address

    Address.from_url(url)


@hookimpl
def runbook_routers() -> list[Provider]:
    return [
        Provider("haproxy", _router, "server weights over HAProxy's runtime API (TCP)", _check),
        Provider(
            "haproxy+unix", _router, "server weights over HAProxy's runtime API (socket)", _check
        ),
    ]


@hookimpl
def runbook_cli_commands(group: Any) -> None:
    from runbook_haproxy.cli import router

    group.add_command(router)
