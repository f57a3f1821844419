"""Inventories in Ansible's INI and YAML formats and in TOML: one shape, three spellings."""

from __future__ import annotations

import builtins

import pytest

from runbook.errors import InventoryError
from runbook.inventory import Host, expand_range, load_inventory, parse_ini, parse_toml, parse_yaml

INI = """
# the same fleet in every format
bastion ansible_host=192.0.2.1

[web]
web-1 ansible_host=10.0.0.1 ansible_port=2201 ansible_user=deploy
web-2 ansible_host=10.0.0.2 weight=3 "motd=hello world"

[db]
db-1 ansible_host=10.0.1.1  # trailing comment
; a whole-line comment

[prod:children]
web
db

[prod:vars]
ansible_user=ops
tier=prod

[web:vars]
tier=frontend

[all:vars]
dc=ams1
"""

YAML = """
all:
  vars:
    dc: ams1
  hosts:
    bastion:
      ansible_host: 192.0.2.1
  children:
    prod:
      vars:
        ansible_user: ops
        tier: prod
      children:
        web:
          vars:
            tier: frontend
          hosts:
            web-1:
              ansible_host: 10.0.0.1
              ansible_port: 2201
              ansible_user: deploy
            web-2:
              ansible_host: 10.0.0.2
              weight: 3
              motd: hello world
        db:
          hosts:
            db-1:
              ansible_host: 10.0.1.1
"""

TOML = """
[all.vars]
dc = "ams1"
[all.hosts.bastion]
ansible_host = "192.0.2.1"

[all.children.prod.vars]
ansible_user = "ops"
tier = "prod"
[all.children.prod.children.web.vars]
tier = "frontend"
[all.children.prod.children.web.hosts.web-1]
ansible_host = "10.0.0.1"
ansible_port = 2201
ansible_user = "deploy"
[all.children.prod.children.web.hosts.web-2]
ansible_host = "10.0.0.2"
weight = 3
motd = "hello world"
[all.children.prod.children.db.hosts.db-1]
ansible_host = "10.0.1.1"
"""

PARSERS = {"ini": (parse_ini, INI), "yaml": (parse_yaml, YAML), "toml": (parse_toml, TOML)}


@pytest.fixture(params=sorted(PARSERS))
def inventory(request):
    parse, text = PARSERS[request.param]
    return parse(text, f"hosts.{request.param}")


def test_hosts_groups_and_children_mean_the_same_in_every_format(inventory):
    assert [h.name for h in inventory.group("web")] == ["web-1", "web-2"]
    assert [h.name for h in inventory.group("prod")] == ["web-1", "web-2", "db-1"]
    assert sorted(h.name for h in inventory.group("all")) == ["bastion", "db-1", "web-1", "web-2"]
    assert [h.name for h in inventory.group("ungrouped")] == ["bastion"]
    assert set(inventory.host("web-1").groups) == {"web", "prod"}


def test_ansible_connection_variables(inventory):
    web1 = inventory.host("web-1")
    assert (web1.address, web1.port, web1.user) == ("10.0.0.1", 2201, "deploy")  # host var wins
    web2 = inventory.host("web-2")
    assert (web2.address, web2.port, web2.user) == ("10.0.0.2", 22, "ops")  # group var
    assert inventory.host("bastion").user is None


def test_variables_merge_outer_group_first_then_host(inventory):
    web2 = inventory.host("web-2")
    assert web2.vars["tier"] == "frontend"  # child group beats parent group
    assert web2.vars["dc"] == "ams1"  # all:vars
    assert web2.vars["motd"] == "hello world"
    assert inventory.host("db-1").vars["tier"] == "prod"


def test_ini_inline_values_are_literals_and_vars_sections_are_strings():
    inv = parse_ini(INI)
    assert inv.host("web-2").vars["weight"] == 3
    assert inv.host("web-1").vars["dc"] == "ams1"


def test_a_host_is_its_name_when_printed():
    host = Host("web-1", "10.0.0.1")
    assert f"{host}" == "web-1" and str(host) == "web-1"
    assert Host("web-9").address == "web-9"
    assert host.to_dict() == {"name": "web-1", "address": "10.0.0.1", "port": 22, "user": None}


def test_ranges():
    assert expand_range("web-[01:03]") == ["web-01", "web-02", "web-03"]
    assert expand_range("db-[a:b]-[1:2]") == ["db-a-1", "db-a-2", "db-b-1", "db-b-2"]
    inv = parse_ini("[web]\nweb-[1:4] ansible_user=root\n")
    assert [h.name for h in inv.group("web")] == ["web-1", "web-2", "web-3", "web-4"]
    with pytest.raises(InventoryError, match="empty host range"):
        expand_range("web-[3:1]")


def test_load_by_suffix(tmp_path):
    for name, (_, text) in {"h.yml": PARSERS["yaml"], "h.toml": PARSERS["toml"]}.items():
        (tmp_path / name).write_text(text)
        assert load_inventory(tmp_path / name).host("web-1").port == 2201
    (tmp_path / "hosts").write_text(INI)  # Ansible's extension-less INI file
    assert load_inventory(tmp_path / "hosts").host("web-1").port == 2201
    assert load_inventory(tmp_path / "hosts").source == str(tmp_path / "hosts")


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_ini, "[web\nweb-1\n", r"hosts:1: unclosed section header"),
        (parse_ini, "[web:stuff]\n", r"hosts:1: unknown section kind 'stuff'"),
        (parse_ini, "[web]\nweb-1 port\n", r"hosts:2: expected key=value after the host name"),
        (parse_ini, "[web:vars]\njust-a-word\n", r"hosts:2: expected key=value in \[web:vars\]"),
        (parse_ini, "[web]\nweb-1 ansible_port=http\n", "ansible_port must be a number"),
        (parse_ini, "[web]\nweb-1 ansible_port=70000\n", "ansible_port 70000 is out of range"),
        (parse_ini, "[a:children]\nb\n[b:children]\na\n", "is its own child"),
        (parse_ini, "[web]\nweb-1 motd='unclosed\n", "hosts:2: cannot read"),
        (parse_yaml, "- just\n- a list\n", "expected groups at the top level"),
        (parse_yaml, "all:\n  hostz: {}\n", "unknown key 'hostz'"),
        (parse_yaml, "all:\n  hosts: [a, b]\n", "hosts must be a mapping"),
        (parse_yaml, "all:\n  hosts:\n    a: 3\n", "host 'a': expected a mapping"),
        (parse_yaml, "all: {hosts: {a: {}\n", r"hosts:\d+: invalid YAML"),
        (parse_toml, "[all\n", "invalid TOML"),
    ],
)
def test_bad_inventories_name_the_file_and_line(parse, text, message):
    with pytest.raises(InventoryError, match=message):
        parse(text, "hosts")


def test_lookups_name_what_exists(inventory):
    with pytest.raises(InventoryError, match=r"no group named 'api' \(groups: all, db, prod"):
        inventory.group("api")
    with pytest.raises(InventoryError, match="no host named 'web-9'"):
        inventory.host("web-9")


def test_missing_file(tmp_path):
    with pytest.raises(InventoryError, match="inventory file not found"):
        load_inventory(tmp_path / "nope.ini")


def test_yaml_without_pyyaml_says_what_to_install(monkeypatch):
    real = builtins.__import__

    def no_yaml(name, *args, **kwargs):
        if name == "yaml":
            raise ImportError("no yaml")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    with pytest.raises(InventoryError, match=r"pip install 'runbook\[yaml\]'"):
        parse_yaml(YAML, "hosts.yml")
