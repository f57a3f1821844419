"""``haproxy://`` router: a service is a backend, a colour or canary is one of its servers.

``set_weights("web", {"canary": 20, "stable": 80})`` sends ``set server web/canary weight 20;
set server web/stable weight 80`` in one runtime API request, then reads ``show servers state
web`` back and raises unless every server has the weight asked for. HAProxy's ``roundrobin`` then
sends traffic in proportion to the weights, so percentages are server weights as they are.

HAProxy has no transaction for weights: the commands of one request run back to back. They are
ordered so that the in-between state is never worse than the state before or after: weights
that go up are set first, so the backend's total weight never drops (no 503 window in a
blue/green switch) and every server's share in between stays below its larger share of the two.

Named servers must exist; a server of the backend left out of the weights must already be at 0,
otherwise the percentages would be wrong, and the call is refused before anything changes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from runbook.errors import UsageError
from runbook.routers.memory import active_of, check_weights
from runbook_haproxy.runtime import Address, HAProxyError, RuntimeAPI, check_name

# One lock per (router address, service) for the whole process: two threads of one run (or two
# runners) never interleave a write and its read-back on the same backend.
_SERVICE_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def service_lock(address: str, service: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _SERVICE_LOCKS.setdefault((address, service), threading.Lock())


def parse_servers_state(answer: str, backend: str) -> dict[str, int]:
    """``show servers state BACKEND`` as ``{server: weight}`` (the current, user-set weight)."""
    lines = [line for line in answer.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# "):
        raise HAProxyError(f"HAProxy: backend {backend!r}: {answer.strip() or 'no answer'}")
    header = lines[1][2:].split()
    try:
        name_at, backend_at, weight_at = (
            header.index("srv_name"),
            header.index("be_name"),
            header.index("srv_uweight"),
        )
    except ValueError:
        raise HAProxyError(f"HAProxy: unexpected servers state header: {lines[1]!r}") from None
    out: dict[str, int] = {}
    for line in lines[2:]:
        fields = line.split()
        if len(fields) <= max(name_at, backend_at, weight_at) or fields[backend_at] != backend:
            continue
        try:
            out[fields[name_at]] = int(fields[weight_at])
        except ValueError:
            raise HAProxyError(f"HAProxy: unexpected servers state line: {line!r}") from None
    return out


def ordered_commands(
    backend: str, before: Mapping[str, int], after: Mapping[str, int]
) -> list[str]:
    """The ``set server`` commands for the servers that change, increases first."""
    changed = [s for s, w in after.items() if before.get(s) != w]
    changed.sort(key=lambda s: (after[s] < before.get(s, 0), s))
    return [f"set server {backend}/{s} weight {after[s]}" for s in changed]


class HAProxyRouter:
    """The ``router`` resource over one HAProxy's runtime API (see the module docstring)."""

    def __init__(self, url: str, api: Any = None) -> None:
        self.url = url
        self.address = Address.from_url(url)
        self.api = api or RuntimeAPI(self.address)

    @classmethod
    def open(cls, url: str, **_: Any) -> HAProxyRouter:
        return cls(url)

    # -- reading ------------------------------------------------------------------------------

    def servers(self, service: str) -> dict[str, int]:
        """Every server of backend ``service`` with its current weight."""
        backend = check_name(service, "backend")
        servers = parse_servers_state(self.api.execute(f"show servers state {backend}"), backend)
        if not servers:
            raise HAProxyError(f"HAProxy backend {backend!r} has no servers")
        return servers

    def weights(self, service: str) -> dict[str, int]:
        return self.servers(service)

    def active(self, service: str) -> str | None:
        return active_of(self.servers(service))

    # -- writing ------------------------------------------------------------------------------

    def set_weights(self, service: str, weights: dict[str, int]) -> None:
        table = check_weights(service, weights)  # WeightsError: a usage error, nothing moved
        for server in table:
            check_name(server, "server")
        with service_lock(str(self.address), service):
            before = self.servers(service)
            self._check_targets(service, before, table)
            commands = ordered_commands(service, before, table)
            if commands:
                answer = self.api.execute(*commands)
                if answer.strip():
                    # Some commands may have been applied: say what the backend looks like now.
                    now = self._read_back(service)
                    raise HAProxyError(
                        f"HAProxy refused a weight change on {service}: {answer.strip()} "
                        f"(weights now {now})"
                    )
            now = self._read_back(service)
            wrong = {s: now.get(s) for s, w in table.items() if now.get(s) != w}
            if wrong:
                raise HAProxyError(
                    f"HAProxy weights of {service} read back as {now}, expected {table}"
                )

    def _read_back(self, service: str) -> dict[str, int]:
        return self.servers(service)

    def _check_targets(
        self, service: str, current: Mapping[str, int], table: Mapping[str, int]
    ) -> None:
        unknown = sorted(set(table) - set(current))
        if unknown:
            raise UsageError(
                f"HAProxy backend {service!r} has no server {', '.join(unknown)} "
                f"(servers: {', '.join(sorted(current))})"
            )
        left = {s: w for s, w in current.items() if s not in table and w > 0}
        if left:
            shown = ", ".join(f"{s} (weight {w})" for s, w in sorted(left.items()))
            raise UsageError(
                f"HAProxy backend {service!r} also sends traffic to {shown}: name every server "
                "with weight, or set it to 0 as well"
            )

    def switch(self, service: str, to: str) -> None:
        """All traffic to ``to``; every other server of the backend to 0."""
        current = self.servers(service)
        table = dict.fromkeys(current, 0)
        table[check_name(to, "server")] = 100
        self.set_weights(service, table)

    def __repr__(self) -> str:
        return f"HAProxyRouter({self.url!r})"
