"""Fleet: selections and --limit over an inventory, the ``hosts`` resource, per-host outcomes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runbook.config import load_config
from runbook.errors import ConfigError, InventoryError
from runbook.fleet import Fleet, fleet_of, host_of, host_states, hosts_line, to_retry
from runbook.inventory import Host, parse_ini

INV = parse_ini(
    """
[web]
web-1 ansible_host=10.0.0.1
web-2 ansible_host=10.0.0.2
web-3 ansible_host=10.0.0.3
[db]
db-1
db-2
""",
    "/srv/hosts.ini",
)


def names(hosts):
    return [h.name for h in hosts]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("group:web", ["web-1", "web-2", "web-3"]),
        ("web-2,group:db", ["web-2", "db-1", "db-2"]),
        ("all,!group:db", ["web-1", "web-2", "web-3"]),
        ("web-*,!web-2", ["web-1", "web-3"]),
        (["db-2", "web-1"], ["db-2", "web-1"]),
        (["web-1", "web-1"], ["web-1"]),
        (["adhoc.example.org"], ["adhoc.example.org"]),
    ],
)
def test_selections(spec, expected):
    assert names(Fleet(INV).select(spec)) == expected


def test_inventory_hosts_keep_their_address_and_ad_hoc_hosts_dial_their_name():
    fleet = Fleet(INV)
    assert fleet.host("web-2").address == "10.0.0.2"
    assert fleet.host("other").address == "other"
    given = Host("x", "192.0.2.7")
    assert fleet.host(given) is given and fleet.select([given]) == [given]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("web-3", ["web-3"]),
        ("web-3,group:db", ["web-3", "db-1", "db-2"]),
        (["group:web", "!web-2"], ["web-1", "web-3"]),
        ("!group:web", ["db-1", "db-2"]),
    ],
)
def test_the_limit_applies_to_every_selection(limit, expected):
    fleet = Fleet(INV, limit)
    assert names(fleet.all()) == expected
    assert names(fleet.select("all")) == expected
    assert names(fleet.group("web")) == [h for h in expected if h.startswith("web")]


def test_a_limit_item_that_matches_nothing_is_refused():
    with pytest.raises(InventoryError, match=r"no group .nope. in inventory /srv/hosts\.ini"):
        Fleet(INV, "group:nope")
    fleet = Fleet(INV, "web-1,web-9")
    with pytest.raises(InventoryError, match="--limit web-9: matches no host in inventory"):
        fleet.check_limit()
    Fleet(INV, "web-1").check_limit()


def test_without_an_inventory_a_limit_matches_the_runbooks_own_hosts():
    fleet = Fleet(None, "b")
    assert names(fleet.select(["a", "b", "c"])) == ["b"]
    fleet.check_limit()
    with pytest.raises(InventoryError, match="--limit zz: matches no host or of this runbook"):
        Fleet(None, "zz").check_limit()


def test_groups_need_an_inventory():
    with pytest.raises(InventoryError, match="group 'web' needs an inventory"):
        Fleet().group("web")
    with pytest.raises(InventoryError, match="needs an inventory"):
        Fleet().select("group:web")
    assert Fleet().all() == []


def test_a_stored_run_keeps_its_inventory_and_limit(tmp_path):
    path = tmp_path / "hosts.ini"
    path.write_text("[web]\nweb-1\nweb-2\n")
    fleet = Fleet.open(path, "web-2")
    assert fleet.options() == {"inventory": str(path), "limit": ["web-2"]}
    again = fleet_of(fleet.options())
    assert names(again.all()) == ["web-2"]
    assert fleet_of({}).inventory is None and Fleet().options() == {}


def step(status, error=None):
    return SimpleNamespace(status=status, error=error)


def test_host_states_take_the_worst_step_of_each_host():
    steps = {
        "release.deploy[a]": step("succeeded"),
        "release.health[a]": step("succeeded"),
        "release.deploy[b]": step("rolled_back"),
        "release.health[b]": step("succeeded"),
        "release.deploy[c]": step("succeeded"),
        "release.health[c]": step("failed", "StepFailed: not healthy"),
        "release.deploy[d]": step("failed", "HostUnreachable: d: connection refused"),
        "release.health[d]": step("skipped"),
        "release.deploy[e]": step("pending"),
        "release.deploy[f]": step("rollback_failed"),
        "release.batch-1": step("failed"),
        "announce": step("pending"),
    }
    states = host_states(steps)
    assert states == {
        "a": "succeeded", "b": "rolled_back", "c": "failed", "d": "unreached",
        "e": "skipped", "f": "rollback_failed",
    }  # fmt: skip
    assert host_states(steps, finished=False)["e"] == "pending"
    assert to_retry(steps) == ["c", "d"]
    assert hosts_line(states) == (
        "6 hosts: 1 succeeded, 1 skipped (e), 1 rolled_back (b), 1 failed (c), "
        "1 unreached (d), 1 rollback_failed (f)"
    )


def test_host_of_reads_the_naming_convention():
    assert host_of("release.deploy[web-3]") == "web-3"
    assert host_of("release.deploy[web1.example.org]") == "web1.example.org"
    assert host_of("release.batch-1") is None and host_of("deploy[x]") is None


def test_the_hosts_resource_in_a_step(tmp_path, runbook_runner):
    (tmp_path / "hosts.ini").write_text("[web]\nweb-1 ansible_host=10.0.0.1\nweb-2\n[db]\ndb-1\n")
    path = tmp_path / "uses_hosts.py"
    path.write_text(
        "from runbook import step\n"
        'inventory = "hosts.ini"\n'
        "@step\n"
        "def addresses(hosts):\n"
        '    return [h.address for h in hosts.group("web")]\n'
    )
    result = runbook_runner.run(path, runner={"limit": "web-1,group:db"})
    assert result.status == "succeeded", result.error
    assert result.steps["addresses"].output == ["10.0.0.1"]


def test_config_inventory_key_is_relative_to_the_project_root(tmp_path):
    (tmp_path / "runbook.toml").write_text('inventory = "ops/hosts.yml"\n')
    (tmp_path / "ops").mkdir()
    config = load_config(tmp_path / "ops")
    assert config.inventory == str(tmp_path / "ops" / "hosts.yml")
    assert load_config(tmp_path / "ops", environ={}).inventory is not None
    (tmp_path / "runbook.toml").write_text("inventory = 3\n")
    with pytest.raises(ConfigError, match="inventory: expected a file path"):
        load_config(tmp_path)
