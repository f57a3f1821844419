"""runbook-redis: the ``redis://`` (and ``rediss://``) lock provider.

``redis://[:password@]host:port/db?prefix=runbook:`` -- ``prefix`` namespaces the keys (default
``runbook:``); other query options go to redis-py (``socket_timeout``, ...).
"""

from __future__ import annotations

from typing import Any

from runbook.hookspecs import Provider, hookimpl

__version__ = "0.2.0"


def _locks(url: str, **_: Any) -> Any:
    from runbook_redis.locks import RedisLocks

    return RedisLocks(url)


@hookimpl
def runbook_lock_providers() -> list[Provider]:
    return [
        Provider(scheme, _locks, "leases with fencing tokens on one Redis node")
        for scheme in ("redis", "rediss")
    ]
