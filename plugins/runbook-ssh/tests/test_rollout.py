"""A rolling release over four real sshd hosts, driven through the ``runbook`` CLI.

The issue's "must show" list, end to end: deploy to four hosts; one failure within the budget
(the run succeeds, ``host_failed`` is audited); two failures past it (the deployed hosts are
rolled back); ``retry`` runs only the failed host; ``--limit``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from runbook.cli import cli

pytestmark = pytest.mark.slow

ROLLOUT = """
from runbook import param, step
from runbook.strategies import rolling

DEPLOYCTL = {deployctl!r}
version = param("version")


def install(host, ssh, params):
    ssh(host, [DEPLOYCTL, "install", params.version])


def healthy(host, ssh, params):
    return ssh(host, [DEPLOYCTL, "health"], check=False).stdout.strip() == params.version


def undo(host, ssh):
    ssh(host, [DEPLOYCTL, "rollback"])


release = rolling("group:web", batch=2, max_failures=1, deploy=install, health=healthy,
                  rollback=undo, health_timeout=1.5, health_backoff=0.1)


@step
def announce(release):
    return release["failed_total"]
"""


@pytest.fixture
def rollout(project: Path, fleet) -> Path:
    path = project / "rollout.py"
    path.write_text(textwrap.dedent(ROLLOUT.format(deployctl=str(fleet.deployctl))))
    return path


@pytest.fixture
def cli_in(project: Path, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.setenv("RUNBOOK_ACTOR", "tester")
    monkeypatch.delenv("RUNBOOK_STORE", raising=False)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def versions(fleet) -> list[str | None]:
    return [s.version() for s in fleet.servers]


def calls(server) -> list[str]:
    log = server.state / "log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def run_json(cli_in, *args: str) -> dict:
    out = cli_in(*args, "--json")
    return json.loads(out.output) | {"exit": out.exit_code}


def test_deploy_to_four_hosts(cli_in, rollout, fleet):
    out = cli_in("exec", str(rollout), "-p", "version=2.0")
    assert out.exit_code == 0, out.output
    assert versions(fleet) == ["2.0"] * 4
    assert "4 hosts: 4 succeeded" in out.output
    assert "release.deploy[web-3]" in out.output


def test_one_failure_within_the_budget_is_audited_and_the_run_succeeds(cli_in, rollout, fleet):
    (fleet.by_name("web-2").state / "fail-install").touch()
    result = run_json(cli_in, "exec", str(rollout), "-p", "version=2.0")
    assert result["exit"] == 0 and result["status"] == "succeeded"
    assert result["hosts"] == {
        "web-1": "succeeded", "web-2": "failed", "web-3": "succeeded", "web-4": "succeeded"
    }  # fmt: skip
    assert versions(fleet) == ["2.0", None, "2.0", "2.0"]
    audit = json.loads(
        cli_in("audit", "--run", result["run_id"], "--kind", "host_failed", "--json").output
    )
    events = audit["events"] if isinstance(audit, dict) else audit
    assert [(e["data"]["host"], e["data"]["reason"]) for e in events] == [("web-2", "failed")]
    assert "install of 2.0 failed on web-2" in events[0]["data"]["error"]
    shown = cli_in("show", result["run_id"]).output
    assert "hosts:  4 hosts: 3 succeeded, 1 failed (web-2)" in shown
    assert f"runbook retry {result['run_id']}" in shown


def test_two_failures_past_the_budget_roll_the_deployed_hosts_back(cli_in, rollout, fleet):
    assert cli_in("exec", str(rollout), "-p", "version=1.0").exit_code == 0
    (fleet.by_name("web-2").state / "fail-install").touch()
    (fleet.by_name("web-3").state / "unhealthy").touch()
    result = run_json(cli_in, "exec", str(rollout), "-p", "version=2.0")
    assert result["exit"] == 1 and result["status"] == "rolled_back"
    assert "failure budget exceeded after batch 2" in result["error"]
    assert versions(fleet) == ["1.0"] * 4  # web-1, web-3, web-4 rolled back; web-2 untouched
    assert result["hosts"] == {
        "web-1": "rolled_back", "web-2": "failed", "web-3": "failed", "web-4": "rolled_back"
    }  # fmt: skip
    assert calls(fleet.by_name("web-4"))[-1] == "rollback"


def test_retry_runs_only_the_failed_hosts(cli_in, rollout, fleet):
    failing = fleet.by_name("web-3").state / "fail-install"
    failing.touch()
    first = run_json(cli_in, "exec", str(rollout), "-p", "version=2.0")
    assert first["status"] == "succeeded" and first["hosts"]["web-3"] == "failed"
    before = {s.name: len(calls(s)) for s in fleet.servers}
    failing.unlink()
    out = cli_in("retry", first["run_id"])
    assert out.exit_code == 0, out.output
    assert f"retrying run {first['run_id']} on web-3" in out.output
    assert versions(fleet) == ["2.0"] * 4
    after = {s.name: len(calls(s)) for s in fleet.servers}
    assert {h: after[h] - before[h] for h in after} == {
        "web-1": 0, "web-2": 0, "web-3": 2, "web-4": 0
    }  # fmt: skip
    runs = json.loads(cli_in("runs", "--json").output)
    runs = runs["runs"] if isinstance(runs, dict) else runs
    retry_id = runs[0]["run_id"]
    shown = json.loads(cli_in("show", retry_id, "--json").output)
    assert shown["run"]["options"]["retry_of"] == first["run_id"]
    assert shown["run"]["options"]["limit"] == ["web-3"]
    assert shown["hosts"] == {"web-3": "succeeded"}
    assert f"retry of {first['run_id']}" in cli_in("show", retry_id).output
    again = cli_in("retry", retry_id)
    assert again.exit_code == 2 and "no failed or unreached hosts" in again.output


def test_limit_acts_on_the_named_hosts_only(cli_in, rollout, fleet):
    out = cli_in("exec", str(rollout), "-p", "version=3.0", "--limit", "web-3,web-1")
    assert out.exit_code == 0, out.output
    assert versions(fleet) == ["3.0", None, "3.0", None]
    assert calls(fleet.by_name("web-2")) == []
    bad = cli_in("exec", str(rollout), "-p", "version=3.0", "--limit", "web-9")
    assert bad.exit_code == 2 and "--limit web-9: matches no host" in bad.output
