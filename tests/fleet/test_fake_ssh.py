"""FakeSSH: scripted per host, commands built like the real resource, and the example runbook."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook.errors import CommandError, CommandFailed, HostUnreachable
from runbook.inventory import Host
from runbook.testing import FakeSSH

EXAMPLE = Path(__file__).resolve().parents[2] / "runbooks" / "fleet.py"


def test_commands_are_built_and_quoted_like_the_real_resource(fake_ssh):
    fake_ssh(Host("web-1", "10.0.0.1"), ["deployctl", "install", "1.0; rm -rf /"])
    fake_ssh("web-2", "deployctl install {v} | tee log", v="$(reboot)")
    assert fake_ssh.calls == [
        ("web-1", "deployctl install '1.0; rm -rf /'"),
        ("web-2", "deployctl install '$(reboot)' | tee log"),
    ]
    with pytest.raises(CommandError, match="no value for"):
        fake_ssh("web-1", "deployctl install {v} {w}", v="1.0")


def test_results_are_scripted_per_host_newest_rule_first():
    fake = FakeSSH()
    fake.on("*", "status", stdout="ok\n")
    fake.on("web-3", "status", returncode=2, stderr="degraded")
    assert fake("web-1", ["status"]).stdout == "ok\n"
    result = fake("web-3", ["status"], check=False)
    assert (result.returncode, result.stderr, result.host, result.ok) == (
        2,
        "degraded",
        "web-3",
        False,
    )
    with pytest.raises(CommandFailed, match=r"^web-3: command exited 2: status\ndegraded$"):
        fake("web-3", ["status"])
    fake.unreachable("web-4", "no route to host")
    with pytest.raises(HostUnreachable, match="web-4: no route to host"):
        fake("web-4", ["status"])
    assert fake.ran("web-3", "status") and not fake.ran("web-2", "*")
    assert fake.hosts() == ["web-1", "web-3", "web-4"]
    assert fake.commands_on("web-3") == ["status", "status"]


def test_times_and_strict_mode():
    fake = FakeSSH(strict=True)
    fake.on("web-1", "flaky")
    fake.on("web-1", "flaky", returncode=1, times=1)  # newest first, once
    assert fake("web-1", ["flaky"], check=False).returncode == 1
    assert fake("web-1", ["flaky"]).returncode == 0
    with pytest.raises(AssertionError, match="unexpected command in strict FakeSSH: web-2: other"):
        fake("web-2", ["other"])


def test_unsafe_is_recorded(fake_ssh):
    fake_ssh.unsafe("web-1", "echo $HOME | wc -c")
    assert fake_ssh.unsafe_calls == [("web-1", "echo $HOME | wc -c")]


def test_the_example_rolls_a_release_to_four_hosts(runbook_runner):
    runbook_runner.ssh.on("*", "deployctl status web", stdout="2.4.1\n")
    result = runbook_runner.run(EXAMPLE, version="2.4.1")
    assert result.status == "succeeded", result.error
    assert result.hosts == dict.fromkeys(["web-1", "web-2", "web-3", "web-4"], "succeeded")
    installs = [h for h, c in runbook_runner.ssh.calls if c == "sudo deployctl install web 2.4.1"]
    assert sorted(installs) == ["web-1", "web-2", "web-3", "web-4"]


def test_the_example_tolerates_one_bad_host_and_rolls_back_past_two(runbook_runner):
    ssh = runbook_runner.ssh
    ssh.on("*", "deployctl status web", stdout="2.4.1\n")
    ssh.on("web-3", "sudo deployctl install *", returncode=1, stderr="disk full")
    result = runbook_runner.run(EXAMPLE, version="2.4.1")
    assert result.status == "succeeded"
    assert result.hosts["web-3"] == "failed"
    assert result.steps["record_release"].output["failed_hosts"] == ["web-3"]
    [event] = [e for e in result.audit if e.kind == "host_failed"]
    assert event.data["host"] == "web-3" and "disk full" in event.data["error"]

    ssh.unreachable("web-1")
    again = runbook_runner.run(EXAMPLE, version="2.4.1")
    assert again.status == "rolled_back"
    assert again.hosts["web-1"] == "unreached" and again.hosts["web-3"] == "failed"
    undone = [h for h, c in ssh.calls if c == "sudo deployctl rollback web"]
    assert sorted(undone) == ["web-2", "web-4"]


def test_the_example_inventory_is_local_only():
    from runbook.inventory import load_inventory

    hosts = list(load_inventory(EXAMPLE.with_name("fleet.ini")))
    assert [h.name for h in hosts] == ["web-1", "web-2", "web-3", "web-4"]
    assert {h.address for h in hosts} == {"127.0.0.1"}
