"""docs/fleets.md says what the code does: its three inventories are one fleet."""

from __future__ import annotations

import re
from pathlib import Path

from runbook.fleet import HOST_STATUSES
from runbook.inventory import parse_ini, parse_toml, parse_yaml

DOC = (Path(__file__).resolve().parents[2] / "docs" / "fleets.md").read_text()


def block(lang: str, start: str = "") -> str:
    return re.search(rf"```{lang}\n({re.escape(start)}.*?)```", DOC, re.S).group(1)


def shape(inventory):
    hosts = sorted((h.name, h.address, h.port, h.user, dict(h.vars)) for h in inventory)
    groups = {g: [h.name for h in inventory.group(g)] for g in inventory.groups}
    return hosts, groups


def test_the_three_inventory_examples_describe_the_same_fleet():
    ini = shape(parse_ini(block("ini")))
    assert shape(parse_yaml(block("yaml"))) == ini
    assert shape(parse_toml(block("toml", "# ops"))) == ini
    assert [h for h, *_ in ini[0]] == ["bastion", "db-1", "web-1", "web-2", "web-3", "web-4"]


def test_every_host_status_is_documented():
    assert [s for s in HOST_STATUSES if f"| `{s}` |" not in DOC] == []
