"""rolling(): per-host steps, failure budgets, host_failed, RunResult.hosts, newest-first undo.

Every test runs a real runbook through the engine (runbook_runner: fake shell and clock), because
what matters is what the engine makes of the group: which steps fail the run, which roll back.
"""

from __future__ import annotations

import pytest

from runbook.collect import load
from runbook.errors import DefinitionError, HostUnreachable, InventoryError
from runbook.fleet import Fleet
from runbook.strategies import rolling

HOSTS = ["web-1", "web-2", "web-3", "web-4"]

TEMPLATE = """
from runbook import step
from runbook.strategies import rolling

def install(host, batch, shell):
    shell(["deployctl", "install", host.name, str(batch)])

def healthy(host, shell):
    return shell(["check", host.name]).ok

def undo(host, shell):
    shell(["deployctl", "rollback", host.name])

release = rolling({hosts}, deploy=install, {options})

@step
def announce(release):
    return release
"""


def write(tmp_path, hosts=HOSTS, name="fleet.py", **options):
    options.setdefault("batch", 2)
    options.setdefault("health", "healthy")
    options.setdefault("rollback", "undo")
    options.setdefault("health_timeout", 10)
    rendered = ", ".join(
        f"{k}={v}" if k in ("health", "rollback") or not isinstance(v, str) else f"{k}={v!r}"
        for k, v in options.items()
        if v is not None
    )
    path = tmp_path / name
    path.write_text(TEMPLATE.format(hosts=repr(hosts), options=rendered))
    return path


def calls(shell, prefix):
    return [c.split()[2] for c in shell.calls if c.startswith(prefix)]


def host_failed(result):
    return [e.data for e in result.audit if e.kind == "host_failed"]


def test_expansion_names_per_host_steps_and_budget_checks(tmp_path):
    rb = load(write(tmp_path))
    assert list(rb.steps) == [
        "release.deploy[web-1]", "release.deploy[web-2]",
        "release.health[web-1]", "release.health[web-2]", "release.batch-1",
        "release.deploy[web-3]", "release.deploy[web-4]",
        "release.health[web-3]", "release.health[web-4]", "release.batch-2",
        "announce",
    ]  # fmt: skip
    deploy = rb.steps["release.deploy[web-3]"]
    assert deploy.reversible and deploy.rollback is not None
    assert not deploy.options.required  # one host's failure does not fail the run by itself
    assert deploy.after == ("release.batch-1",)
    assert rb.steps["release.health[web-3]"].deps == ("release.deploy[web-3]",)
    assert rb.steps["release.batch-2"].options.required
    assert rb.steps["announce"].deps == ("release.batch-2",)


def test_without_health_or_rollback(tmp_path):
    rb = load(write(tmp_path, health=None, rollback=None, batch="50%"))
    assert list(rb.steps)[:3] == [
        "release.deploy[web-1]",
        "release.deploy[web-2]",
        "release.batch-1",
    ]
    assert not rb.steps["release.deploy[web-1]"].reversible


def test_deploys_every_host_batch_by_batch(tmp_path, runbook_runner):
    result = runbook_runner.run(write(tmp_path))
    assert result.status == "succeeded", result.error
    installs = [c for c in runbook_runner.shell.calls if c.startswith("deployctl install")]
    assert sorted(installs[:2]) == ["deployctl install web-1 1", "deployctl install web-2 1"]
    assert sorted(installs[2:]) == ["deployctl install web-3 2", "deployctl install web-4 2"]
    # batch 2 starts only after batch 1 is healthy
    order = runbook_runner.shell.calls
    assert max(order.index(f"check web-{i}") for i in (1, 2)) < order.index(installs[2])
    assert result.hosts == dict.fromkeys(HOSTS, "succeeded")
    assert result.steps["announce"].output["failed_total"] == []
    assert result.to_dict()["hosts"] == result.hosts


def test_one_failure_within_the_budget_is_recorded_and_the_rollout_goes_on(
    tmp_path, runbook_runner
):
    runbook_runner.shell.on("deployctl install web-2 *", returncode=1, stderr="disk full")
    result = runbook_runner.run(write(tmp_path, max_failures=1))
    assert result.status == "succeeded", result.error
    assert result.hosts == {
        "web-1": "succeeded", "web-2": "failed", "web-3": "succeeded", "web-4": "succeeded"
    }  # fmt: skip
    assert result.steps["release.deploy[web-2]"].status == "failed"
    assert "disk full" in result.steps["release.deploy[web-2]"].error
    assert result.steps["release.health[web-2]"].status == "skipped"
    [event] = host_failed(result)
    assert event["host"] == "web-2" and event["reason"] == "failed"
    assert event["phase"] == "deploy" and event["batch"] == 1
    assert "disk full" in event["error"]
    assert calls(runbook_runner.shell, "deployctl rollback") == []
    assert result.steps["announce"].output["failed_total"] == ["web-2"]


def test_two_failures_past_the_budget_roll_back_deployed_hosts_newest_batch_first(
    tmp_path, runbook_runner
):
    runbook_runner.shell.on("deployctl install web-2 *", returncode=1)
    runbook_runner.shell.on("check web-3", returncode=1)  # deployed, never healthy
    result = runbook_runner.run(write(tmp_path, max_failures=1))
    assert result.status == "rolled_back"
    assert "failure budget exceeded after batch 2" in result.error
    assert "max_failures=1" in result.error
    # deployed hosts undone, newest batch first; web-2 never deployed, so it is left alone
    assert calls(runbook_runner.shell, "deployctl rollback") == ["web-4", "web-3", "web-1"]
    assert result.hosts == {
        "web-1": "rolled_back", "web-2": "failed", "web-3": "failed", "web-4": "rolled_back"
    }  # fmt: skip
    assert [(e["host"], e["phase"]) for e in host_failed(result)] == [
        ("web-2", "deploy"), ("web-3", "health")
    ]  # fmt: skip
    assert result.steps["announce"].status == "pending"


def test_the_budget_stops_the_rollout_before_the_next_batch(tmp_path, runbook_runner):
    runbook_runner.shell.on("deployctl install web-1 *", returncode=1)
    result = runbook_runner.run(write(tmp_path))  # max_failures=0
    assert result.status == "rolled_back"
    assert calls(runbook_runner.shell, "deployctl install") == ["web-1", "web-2"]
    assert calls(runbook_runner.shell, "deployctl rollback") == ["web-2"]
    assert result.hosts["web-3"] == "skipped" and result.hosts["web-4"] == "skipped"


def test_percentages_and_the_per_batch_budget(tmp_path, runbook_runner):
    runbook_runner.shell.on("deployctl install web-3 *", returncode=1)
    runbook_runner.shell.on("deployctl install web-4 *", returncode=1)
    # 50% of 4 hosts may fail in total, but only one per batch: batch 2 has two
    result = runbook_runner.run(write(tmp_path, max_failures="50%", max_failures_per_batch=1))
    assert result.status == "rolled_back"
    assert "2 in this batch, max_failures_per_batch=1" in result.error
    assert calls(runbook_runner.shell, "deployctl rollback") == ["web-2", "web-1"]


def test_percent_budget_rounds_down(tmp_path, runbook_runner):
    runbook_runner.shell.on("deployctl install web-1 *", returncode=1)
    result = runbook_runner.run(write(tmp_path, max_failures="25%"))  # 1 of 4
    assert result.status == "succeeded"
    runbook_runner.shell.on("deployctl install web-3 *", returncode=1)
    result = runbook_runner.run(write(tmp_path, max_failures="49%"))  # still 1 of 4
    assert result.status == "rolled_back"


def test_an_unreachable_host_is_unreached_not_failed(tmp_path, runbook_runner):
    runbook_runner.shell.on(
        "deployctl install web-4 *", raises=HostUnreachable("web-4", "connection refused")
    )
    result = runbook_runner.run(write(tmp_path, max_failures=1))
    assert result.status == "succeeded"
    assert result.hosts["web-4"] == "unreached"
    [event] = host_failed(result)
    assert event["reason"] == "unreached" and "connection refused" in event["error"]


def test_without_rollback_the_rollout_stops_where_it_is(tmp_path, runbook_runner):
    runbook_runner.shell.on("deployctl install web-3 *", returncode=1)
    result = runbook_runner.run(write(tmp_path, rollback=None))
    assert result.status == "failed"
    assert result.hosts == {
        "web-1": "succeeded", "web-2": "succeeded", "web-3": "failed", "web-4": "succeeded"
    }  # fmt: skip


def test_a_failed_undo_makes_the_run_rollback_failed(tmp_path, runbook_runner):
    runbook_runner.shell.on("deployctl install web-3 *", returncode=1)
    runbook_runner.shell.on("deployctl rollback web-1", returncode=255)
    result = runbook_runner.run(write(tmp_path))
    assert result.status == "rollback_failed"
    assert result.hosts["web-1"] == "rollback_failed"
    assert calls(runbook_runner.shell, "deployctl rollback") == ["web-4", "web-2", "web-1"]


INVENTORY = """
[web]
web-1 ansible_host=10.0.0.1
web-2 ansible_host=10.0.0.2
web-3 ansible_host=10.0.0.3
[db]
db-1
"""


def test_group_selection_uses_inventory_addresses_and_the_limit(tmp_path, runbook_runner):
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    path = write(tmp_path, hosts="group:web")
    text = path.read_text().replace("deploy=install", "deploy=install")
    path.write_text(
        'inventory = "hosts.ini"\n' + text.replace("host.name, str", "host.address, str")
    )
    rb = load(path)
    assert [n for n in rb.steps if "deploy" in n] == [
        "release.deploy[web-1]", "release.deploy[web-2]", "release.deploy[web-3]"
    ]  # fmt: skip
    result = runbook_runner.run(path, runner={"limit": "web-3,web-1"})
    assert result.status == "succeeded", result.error
    assert sorted(calls(runbook_runner.shell, "deployctl install")) == ["10.0.0.1", "10.0.0.3"]
    assert result.hosts == {"web-1": "succeeded", "web-3": "succeeded"}


def test_a_limit_outside_the_rollout_skips_the_group_and_its_dependents(tmp_path, runbook_runner):
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    path = write(tmp_path, hosts="group:web")
    path.write_text('inventory = "hosts.ini"\n' + path.read_text())
    result = runbook_runner.run(path, runner={"limit": "group:db"})
    assert result.status == "succeeded"
    assert result.steps["release.no-hosts"].status == "skipped"
    assert result.steps["announce"].status == "skipped"
    assert runbook_runner.shell.calls == []


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("web-9", "--limit web-9: matches no host"),
        ("group:nope", "no group 'nope'"),
    ],
)
def test_a_limit_that_matches_nothing_is_a_usage_error(tmp_path, limit, message):
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    path = write(tmp_path, hosts="group:web")
    path.write_text('inventory = "hosts.ini"\n' + path.read_text())
    with pytest.raises(InventoryError, match=message):
        load(path, fleet=Fleet.open(None, limit))


def test_literal_hosts_are_limited_too(tmp_path):
    rb = load(write(tmp_path), fleet=Fleet(None, "web-2"))
    assert [n for n in rb.steps if "deploy" in n] == ["release.deploy[web-2]"]


@pytest.mark.parametrize(
    ("hosts", "kwargs", "message"),
    [
        ([], {}, "hosts must be 'group:NAME' or a non-empty list"),
        ("  ", {}, "hosts must be a selection"),
        (["a", "a"], {}, "hosts appear more than once: ['a']"),
        (["a", ""], {}, "each host must be a non-empty string"),
        (["a"], {"batch": 0}, "batch= must be an integer >= 1 or a percentage"),
        (["a"], {"batch": "150%"}, "batch= must be an integer or a percentage"),
        (["a"], {"max_failures": -1}, "max_failures= must be an integer >= 0"),
        (["a"], {"max_failures": "ten"}, "max_failures= must be an integer or a percentage"),
        (["a"], {"max_failures_per_batch": True}, "max_failures_per_batch= must be an integer"),
        (["a"], {"deploy": None}, "deploy= must be a function"),
        (["a"], {"health_timeout": 0}, "health_timeout= must be a number of seconds > 0"),
    ],
)
def test_definition_errors(hosts, kwargs, message):
    options = {"deploy": print, **kwargs}
    with pytest.raises(DefinitionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        rolling(hosts, **options)


def test_a_group_without_an_inventory_is_a_located_definition_error(tmp_path):
    path = write(tmp_path, hosts="group:web")
    with pytest.raises(DefinitionError, match="needs an inventory") as info:
        load(path)
    assert info.value.file == str(path) and info.value.line


def test_an_unknown_group_names_the_known_ones(tmp_path):
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    path = write(tmp_path, hosts="group:api")
    path.write_text('inventory = "hosts.ini"\n' + path.read_text())
    with pytest.raises(DefinitionError, match=r"no group named 'api' \(groups: all, db, "):
        load(path)


GATED = """
from runbook import step
from runbook.strategies import rolling

inventory = "hosts.ini"

@step(approval=True)
def go():
    return True

def install(host, shell):
    shell(["deployctl", "install", host.name])

release = rolling("group:web", deploy=install, after=[go])
"""


def test_resume_keeps_the_hosts_the_run_started_with(tmp_path, runbook_runner):
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    path = tmp_path / "gated.py"
    path.write_text(GATED)
    paused = runbook_runner.run(path, env="staging", runner={"limit": "web-2"})
    assert paused.status == "paused"
    runner = runbook_runner.runner(env="staging")  # no limit given when resuming
    runner.approve(paused.run_id, actor="bob")
    result = runner.resume(paused.run_id)
    assert result.status == "succeeded", result.error
    assert runbook_runner.shell.calls == ["deployctl install web-2"]
    assert result.hosts == {"web-2": "succeeded"}
