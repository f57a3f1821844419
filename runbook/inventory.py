"""Inventories: which hosts exist, how to reach them, and which groups they belong to.

Three file formats describe the same shape, so a team keeps the inventory it already has:

* Ansible's INI (``[web]`` sections, ``[web:vars]``, ``[prod:children]``, ``web-[1:4]`` ranges),
* Ansible's YAML (``all: {hosts: ..., vars: ..., children: ...}``), and
* the same nesting in TOML (``[all.children.web.hosts.web-1]``).

``ansible_host``, ``ansible_port`` and ``ansible_user`` become a host's ``address``, ``port`` and
``user``; every variable (group variables merged outer group first, then host variables) stays in
``vars``. YAML needs PyYAML (``pip install 'runbook[yaml]'``): the core depends only on click,
pluggy and httpx, and a hand-written YAML subset would silently misread the YAML features real
inventories use (anchors, flow mappings, block scalars). INI and TOML need nothing extra.
"""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from runbook.errors import InventoryError

ALL = "all"
UNGROUPED = "ungrouped"
DEFAULT_PORT = 22
_RANGE = re.compile(r"\[([0-9]+):([0-9]+)\]|\[([a-z]):([a-z])\]")


@dataclass(frozen=True)
class Host:
    """One machine: ``name`` is what runbooks and ``--limit`` say; ``address`` is what to dial."""

    name: str
    address: str = ""
    port: int = DEFAULT_PORT
    user: str | None = None
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    groups: tuple[str, ...] = ()  # every group it is in, parents included (not ``all``)

    def __post_init__(self) -> None:
        if not self.address:
            object.__setattr__(self, "address", self.name)

    def __str__(self) -> str:
        return self.name

    def to_dict(self) -> dict[str, Any]:
        """Where to connect, JSON-ready (what ``--json`` documents show of a host)."""
        return {"name": self.name, "address": self.address, "port": self.port, "user": self.user}


class Inventory:
    """Hosts by name and groups by name (members include the hosts of child groups)."""

    def __init__(
        self, hosts: Mapping[str, Host], groups: Mapping[str, tuple[str, ...]], source: str = ""
    ) -> None:
        self._hosts = dict(hosts)
        self._groups = {**dict(groups), ALL: tuple(self._hosts)}
        self.source = source

    def __iter__(self) -> Iterator[Host]:
        return iter(self._hosts.values())

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, name: object) -> bool:
        return name in self._hosts

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group name in the order the inventory declared them, then ``all``."""
        return tuple(self._groups)

    def host(self, name: str) -> Host:
        """The host called ``name``; an unknown name is an ``InventoryError`` naming the file."""
        try:
            return self._hosts[name]
        except KeyError:
            raise InventoryError(f"{self._where()}no host named {name!r}") from None

    def group(self, name: str) -> list[Host]:
        """The group's hosts, its child groups' included; an unknown group lists the known ones."""
        if name not in self._groups:
            known = ", ".join(sorted(self._groups))
            raise InventoryError(f"{self._where()}no group named {name!r} (groups: {known})")
        return [self._hosts[h] for h in self._groups[name]]

    def has_group(self, name: str) -> bool:
        """Whether ``name`` is a group (``group:web`` in a selection) rather than a host."""
        return name in self._groups

    def _where(self) -> str:
        return f"inventory {self.source}: " if self.source else "inventory: "


# -- building -------------------------------------------------------------------------------------


class _Builder:
    """Collects groups, children and vars from any format, then resolves hosts once."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.members: dict[str, list[str]] = {ALL: [], UNGROUPED: []}
        self.children: dict[str, list[str]] = {ALL: []}
        self.group_vars: dict[str, dict[str, Any]] = {}

    def error(self, message: str, line: int | None = None) -> InventoryError:
        where = f"{self.source}:{line}" if line else self.source
        return InventoryError(f"{where}: {message}")

    def group(self, name: str, line: int | None = None) -> None:
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise self.error(f"bad group name {name!r}", line)
        self.members.setdefault(name, [])
        self.children.setdefault(name, [])

    def host(self, group: str, name: str, variables: Mapping[str, Any], line: int | None) -> None:
        if not name or any(c.isspace() for c in name) or name.startswith("group:"):
            raise self.error(f"bad host name {name!r}", line)
        self.group(group, line)
        merged = self.host_vars.setdefault(name, {})
        merged.update(variables)
        if name not in self.members[group]:
            self.members[group].append(name)

    def child(self, parent: str, child: str, line: int | None = None) -> None:
        self.group(parent, line)
        self.group(child, line)
        if child not in self.children[parent]:
            self.children[parent].append(child)

    def build(self) -> Inventory:
        parents: dict[str, set[str]] = {}
        for parent, kids in self.children.items():
            for kid in kids:
                parents.setdefault(kid, set()).add(parent)
        depth = {g: self._depth(g, parents, ()) for g in self.members}
        resolved = {g: self._hosts_of(g, ()) for g in self.members if g not in (ALL, UNGROUPED)}
        in_group = {h for hosts in resolved.values() for h in hosts}
        resolved[UNGROUPED] = tuple(h for h in self.host_vars if h not in in_group)
        hosts = {}
        for name, own in self.host_vars.items():
            groups = sorted((g for g, hs in resolved.items() if name in hs), key=lambda g: depth[g])
            merged: dict[str, Any] = dict(self.group_vars.get(ALL, {}))
            for g in groups:  # outer groups first, so a child group's vars win
                merged.update(self.group_vars.get(g, {}))
            merged.update(own)
            hosts[name] = self._host(name, merged, tuple(groups))
        return Inventory(hosts, resolved, self.source)

    def _depth(self, group: str, parents: Mapping[str, set[str]], seen: tuple[str, ...]) -> int:
        if group in seen:
            raise self.error(f"group {group!r} is its own child: {' -> '.join((*seen, group))}")
        above = [self._depth(p, parents, (*seen, group)) for p in parents.get(group, ())]
        return 1 + max(above, default=0)

    def _hosts_of(self, group: str, seen: tuple[str, ...]) -> tuple[str, ...]:
        if group in seen:
            raise self.error(f"group {group!r} is its own child: {' -> '.join((*seen, group))}")
        out = dict.fromkeys(self.members.get(group, []))
        for kid in self.children.get(group, []):
            out.update(dict.fromkeys(self._hosts_of(kid, (*seen, group))))
        return tuple(out)

    def _host(self, name: str, merged: dict[str, Any], groups: tuple[str, ...]) -> Host:
        port = merged.get("ansible_port", DEFAULT_PORT)
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise self.error(f"host {name!r}: ansible_port must be a number") from None
        if not 0 < port < 65536:
            raise self.error(f"host {name!r}: ansible_port {port} is out of range")
        user = merged.get("ansible_user")
        return Host(
            name=name,
            address=str(merged.get("ansible_host") or name),
            port=port,
            user=str(user) if user is not None else None,
            vars=MappingProxyType(merged),
            groups=groups,
        )


def expand_range(pattern: str) -> list[str]:
    """Ansible's host ranges: ``web-[01:03]`` is web-01, web-02, web-03; ``db-[a:c]`` too."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if match.group(1) is not None:
        start, stop = match.group(1), match.group(2)
        width = len(start) if start.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(start), int(stop) + 1)]
    else:
        items = [chr(c) for c in range(ord(match.group(3)), ord(match.group(4)) + 1)]
    if not items:
        raise InventoryError(f"empty host range in {pattern!r}")
    return [name for item in items for name in expand_range(f"{head}{item}{tail}")]


# -- INI ------------------------------------------------------------------------------------------


def _ini_value(text: str) -> Any:
    """Inline host variables are Python literals in Ansible's INI (``port=2222`` is a number)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_ini(text: str, source: str = "inventory") -> Inventory:
    """An Ansible-style INI inventory (``[group]``, ``[group:vars]``, ``[group:children]``), so
    a team's existing inventory works as it is. ``source`` names it in errors."""
    b = _Builder(source)
    section, kind = UNGROUPED, "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise b.error(f"unclosed section header {line!r}", number)
            name, _, kind = line[1:-1].strip().partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise b.error(f"unknown section kind {kind!r} (hosts, vars, children)", number)
            section = name
            b.group(section, number)
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise b.error(f"cannot read {line!r}: {exc}", number) from None
        if not tokens:
            continue
        if kind == "children":
            b.child(section, tokens[0], number)
        elif kind == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise b.error(f"expected key=value in [{section}:vars], got {line!r}", number)
            b.group_vars.setdefault(section, {})[key.strip()] = value.strip()
        else:
            variables = {}
            for token in tokens[1:]:
                key, sep, value = token.partition("=")
                if not sep or not key:
                    raise b.error(f"expected key=value after the host name, got {token!r}", number)
                variables[key] = _ini_value(value)
            for name in expand_range(tokens[0]):
                b.host(section, name, variables, number)
    return b.build()


# -- YAML and TOML (the same nested shape) -------------------------------------------------


def parse_mapping(data: Any, source: str = "inventory") -> Inventory:
    """``{group: {hosts: {name: vars}, vars: {...}, children: {group: {...}}}}`` at any depth."""
    b = _Builder(source)
    if data is None:
        return b.build()
    if not isinstance(data, Mapping):
        raise b.error("expected groups at the top level (for example all: {hosts: ...})")
    for name, body in data.items():
        _group_body(b, str(name), body)
    return b.build()


def _group_body(b: _Builder, name: str, body: Any) -> None:
    b.group(name)
    if body is None:
        return
    if not isinstance(body, Mapping):
        raise b.error(f"group {name!r}: expected a mapping with hosts, vars or children")
    unknown = sorted(set(body) - {"hosts", "vars", "children"})
    if unknown:
        raise b.error(f"group {name!r}: unknown key {unknown[0]!r} (hosts, vars, children)")
    hosts = body.get("hosts") or {}
    if not isinstance(hosts, Mapping):
        raise b.error(f"group {name!r}: hosts must be a mapping of host name to variables")
    for host, variables in hosts.items():
        if variables is not None and not isinstance(variables, Mapping):
            raise b.error(f"host {host!r}: expected a mapping of variables")
        for expanded in expand_range(str(host)):
            b.host(name, expanded, dict(variables or {}), None)
    group_vars = body.get("vars") or {}
    if not isinstance(group_vars, Mapping):
        raise b.error(f"group {name!r}: vars must be a mapping")
    b.group_vars.setdefault(name, {}).update(group_vars)
    children = body.get("children") or {}
    if not isinstance(children, Mapping):
        raise b.error(f"group {name!r}: children must be a mapping of group names")
    for child, child_body in children.items():
        b.child(name, str(child))
        _group_body(b, str(child), child_body)


def parse_yaml(text: str, source: str = "inventory") -> Inventory:
    """An Ansible-style YAML inventory (``runbook[yaml]``); the same shape as ``parse_mapping``."""
    try:
        import yaml
    except ImportError:
        raise InventoryError(
            f"{source}: YAML inventories need PyYAML: pip install 'runbook[yaml]' "
            "(or write the inventory in INI or TOML)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise InventoryError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_mapping(data, source)


def parse_toml(text: str, source: str = "inventory") -> Inventory:
    """A TOML inventory: the YAML shape (``parse_mapping``) with no extra dependency."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{source}: invalid TOML: {exc}") from None
    return parse_mapping(data, source)


def load_inventory(path: str | Path) -> Inventory:
    """Read an inventory file; the format comes from the suffix (``.yml``/``.yaml``, ``.toml``,
    anything else is INI, like Ansible's extension-less ``hosts`` file)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(f"{source}: inventory file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{source}: cannot read the inventory: {exc}") from None
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml"):
        return parse_yaml(text, source)
    if suffix == ".toml":
        return parse_toml(text, source)
    return parse_ini(text, source)
