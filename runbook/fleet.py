"""The hosts one run acts on: an inventory, narrowed by ``--limit``, and each host's outcome.

A ``Fleet`` is what the ``hosts`` resource is, and what ``rolling(hosts="group:web")`` expands
against when the runbook is collected. ``--limit web-3,group:db`` (Ansible's ``--limit``) keeps
only matching hosts, for every selection of the run, so a rollout, a ``hosts.group()`` call in a
step and ``runbook retry`` all agree on which machines are in play. A limit item that matches no
host is a usage error: a typo must not quietly select nothing (or everything).

Per-host outcomes are derived from step names: a strategy names its per-host steps
``<group>.<phase>[<host>]`` (``release.deploy[web-3]``), so the same function reads a live
``RunResult`` and a run stored weeks ago.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.errors import InventoryError

if TYPE_CHECKING:
    from runbook.inventory import Host, Inventory

# runbook.inventory (its parsers, tomllib) is imported by the functions that need a host or an
# inventory: every collection makes a Fleet, and most runbooks have no inventory.

GROUP_PREFIX = "group:"

# Host outcomes (``RunResult.hosts``), worst first: a host with several steps gets the worst.
HOST_ROLLBACK_FAILED = "rollback_failed"
HOST_UNREACHED = "unreached"
HOST_FAILED = "failed"
HOST_ROLLED_BACK = "rolled_back"
HOST_PENDING = "pending"
HOST_SKIPPED = "skipped"
HOST_SUCCEEDED = "succeeded"
HOST_STATUSES = (
    HOST_ROLLBACK_FAILED,
    HOST_UNREACHED,
    HOST_FAILED,
    HOST_ROLLED_BACK,
    HOST_PENDING,
    HOST_SKIPPED,
    HOST_SUCCEEDED,
)
RETRY_STATUSES = frozenset({HOST_FAILED, HOST_UNREACHED})
_HOST_STEP = re.compile(r"^[^.\[\]]+\.[^\[\]]+\[(?P<host>.+)\]$")
UNREACHABLE_PREFIX = "HostUnreachable"


def parse_pattern(pattern: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"web-3,group:db"`` or ``["web-3", "group:db"]`` -> ``("web-3", "group:db")``."""
    if pattern is None:
        return ()
    raw = pattern.split(",") if isinstance(pattern, str) else list(pattern)
    items = []
    for item in raw:
        if not isinstance(item, str):
            raise InventoryError(f"host selection items must be strings, got {item!r}")
        item = item.strip()
        if item:
            items.append(item)
    return tuple(items)


def _matches(item: str, host: Host) -> bool:
    from runbook.inventory import ALL

    if item == ALL:
        return True
    if item.startswith(GROUP_PREFIX):
        return item[len(GROUP_PREFIX) :] in host.groups
    return fnmatch.fnmatchcase(host.name, item)


class Fleet:
    """An inventory (or none) and a limit. Every selection applies the limit."""

    def __init__(
        self,
        inventory: Inventory | None = None,
        limit: str | Sequence[str] | None = None,
    ) -> None:
        self.inventory = inventory
        self.limit = parse_pattern(limit) or None
        self._matched: set[str] = set()
        if self.limit and inventory is not None:
            for item in self.limit:
                positive = item.lstrip("!")
                if positive.startswith(GROUP_PREFIX) and not inventory.has_group(
                    positive[len(GROUP_PREFIX) :]
                ):
                    raise InventoryError(
                        f"--limit {item}: no group {positive[len(GROUP_PREFIX) :]!r} in "
                        f"inventory {inventory.source}"
                    )

    @classmethod
    def open(
        cls, inventory: str | Path | Inventory | None, limit: str | Sequence[str] | None = None
    ) -> Fleet:
        if isinstance(inventory, str | Path):
            from runbook.inventory import load_inventory

            inventory = load_inventory(inventory)
        return cls(inventory, limit)

    @property
    def source(self) -> str | None:
        return self.inventory.source if self.inventory is not None else None

    # -- selections ---------------------------------------------------------------------------

    def allows(self, host: Host) -> bool:
        if not self.limit:
            return True
        keep = False
        for item in self.limit:
            if item.startswith("!"):
                if _matches(item[1:], host):
                    return False
            elif _matches(item, host):
                self._matched.add(item)
                keep = True
        return keep or all(item.startswith("!") for item in self.limit)

    def _need_inventory(self, what: str) -> Inventory:
        if self.inventory is None:
            raise InventoryError(
                f'{what} needs an inventory: set inventory = "hosts.yml" in [tool.runbook], '
                "pass --inventory FILE, or give a list of host names"
            )
        return self.inventory

    def host(self, name: str | Host) -> Host:
        """A host by name (or the Host itself); a name not in the inventory is a host whose
        address is its name, as Ansible treats an ad-hoc host."""
        from runbook.inventory import Host

        if isinstance(name, Host):
            return name
        if self.inventory is not None and name in self.inventory:
            return self.inventory.host(name)
        return Host(name)

    def group(self, name: str) -> list[Host]:
        """The group's hosts within the limit (``hosts.group("web")``)."""
        name = name[len(GROUP_PREFIX) :] if name.startswith(GROUP_PREFIX) else name
        hosts = self._need_inventory(f"group {name!r}").group(name)
        return [h for h in hosts if self.allows(h)]

    def all(self) -> list[Host]:
        inventory = self.inventory
        return [h for h in inventory if self.allows(h)] if inventory is not None else []

    def select(self, spec: str | Sequence[str | Host]) -> list[Host]:
        """``"group:web"``, ``"web-1,web-2"``, ``"all"``, ``"web-*"`` or a list of names and
        Host objects; ``!item`` excludes. The limit applies; the order is the inventory's (or the
        list's), without duplicates."""
        from runbook.inventory import ALL, Host

        items: list[str | Host] = list(parse_pattern(spec) if isinstance(spec, str) else spec)
        chosen: dict[str, Host] = {}
        excluded = [i[1:] for i in items if isinstance(i, str) and i.startswith("!")]
        for item in items:
            if isinstance(item, Host):
                chosen.setdefault(item.name, item)
            elif item.startswith("!"):
                continue
            elif item == ALL or item.startswith(GROUP_PREFIX):
                what = "hosts='all'" if item == ALL else f"group {item[len(GROUP_PREFIX) :]!r}"
                inventory = self._need_inventory(what)
                name = ALL if item == ALL else item[len(GROUP_PREFIX) :]
                for host in inventory.group(name):
                    chosen.setdefault(host.name, host)
            elif any(c in item for c in "*?[") and self.inventory is not None:
                for host in self.inventory:
                    if fnmatch.fnmatchcase(host.name, item):
                        chosen.setdefault(host.name, host)
            elif not isinstance(item, str) or not item:
                raise InventoryError(f"bad host selection item {item!r}")
            else:
                chosen.setdefault(item, self.host(item))
        return [
            h
            for h in chosen.values()
            if not any(_matches(x, h) for x in excluded) and self.allows(h)
        ]

    def unmatched(self) -> list[str]:
        """Limit items that selected no host of the inventory nor of any selection so far."""
        if not self.limit:
            return []
        seen = set(self._matched)
        if self.inventory is not None:
            for host in self.inventory:
                seen.update(i for i in self.limit if _matches(i, host))
        return [i for i in self.limit if not i.startswith("!") and i not in seen]

    def check_limit(self) -> None:
        missing = self.unmatched()
        if missing:
            where = f" in inventory {self.source}" if self.source else ""
            raise InventoryError(
                f"--limit {','.join(missing)}: matches no host{where} or of this runbook"
            )

    def options(self) -> dict[str, Any]:
        """What a stored run keeps so resume and retry see the same hosts."""
        out: dict[str, Any] = {}
        if self.source:
            out["inventory"] = str(Path(self.source).resolve())
        if self.limit:
            out["limit"] = list(self.limit)
        return out

    def __repr__(self) -> str:
        return f"Fleet(inventory={self.source!r}, limit={self.limit!r})"


def fleet_of(options: Mapping[str, Any]) -> Fleet:
    """The fleet a stored run was started with (``RunRecord.options``)."""
    return Fleet.open(options.get("inventory"), options.get("limit"))


# -- per-host outcomes ----------------------------------------------------------------------------


def host_of(step_name: str) -> str | None:
    """``release.deploy[web-3]`` -> ``web-3``; None for a step that is not per host."""
    match = _HOST_STEP.match(step_name)
    return match.group("host") if match else None


def _state(status: str, error: str | None, finished: bool) -> str:
    if status == "rollback_failed":
        return HOST_ROLLBACK_FAILED
    if status in ("failed", "cancelled", "denied") or (finished and status == "running"):
        unreached = (error or "").startswith(UNREACHABLE_PREFIX)
        return HOST_UNREACHED if unreached else HOST_FAILED
    if status == "rolled_back":
        return HOST_ROLLED_BACK
    if status == "succeeded":
        return HOST_SUCCEEDED
    if status in ("skipped", "planned") or finished:
        return HOST_SKIPPED  # never attempted: the rollout stopped first, or --dry-run
    return HOST_PENDING  # pending, running, awaiting approval in a run that goes on


def host_states(steps: Mapping[str, Any], *, finished: bool = True) -> dict[str, str]:
    """Each host's outcome from per-host step results (anything with ``status`` and ``error``).

    The worst step decides: a host whose deploy succeeded but whose health check failed is
    ``failed``; one whose deploy was undone is ``rolled_back``; one whose steps never ran
    because the rollout stopped is ``skipped`` (``pending`` while the run is not ``finished``:
    paused or still running).
    """
    rank = {s: i for i, s in enumerate(HOST_STATUSES)}
    seen: dict[str, list[str]] = {}
    for name, step in steps.items():
        host = host_of(name)
        if host is not None:
            state = _state(step.status, getattr(step, "error", None), finished)
            seen.setdefault(host, []).append(state)
    out: dict[str, str] = {}
    for host, states in seen.items():
        bad = [s for s in states if s not in (HOST_SUCCEEDED, HOST_SKIPPED)]
        if bad:
            out[host] = min(bad, key=rank.__getitem__)
        else:
            out[host] = HOST_SUCCEEDED if HOST_SKIPPED not in states else HOST_SKIPPED
    return out


def to_retry(steps: Mapping[str, Any]) -> list[str]:
    """Hosts a ``runbook retry`` runs again: those that failed or were not reached."""
    return [h for h, s in host_states(steps).items() if s in RETRY_STATUSES]


def hosts_line(states: Mapping[str, str]) -> str:
    """``4 hosts: 3 succeeded, 1 failed (web-3)`` for summaries."""
    counts: dict[str, list[str]] = {}
    for host, state in states.items():
        counts.setdefault(state, []).append(host)
    parts = []
    for state in reversed(HOST_STATUSES):
        if state in counts:
            names = counts[state]
            shown = "" if state == HOST_SUCCEEDED else f" ({', '.join(names)})"
            parts.append(f"{len(names)} {state}{shown}")
    return f"{len(states)} hosts: " + ", ".join(parts)
