"""``runbook retry``, ``show`` and ``graph`` per-host state, through the CLI, without SSH.

The rollout acts on local folders (one per "host") through ``shell``, so a host fails when its
folder holds a ``fail`` marker: what matters here is which hosts a retry picks and how the runs
are linked, not how commands reach a host (plugins/runbook-ssh covers that with real sshd).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from runbook.cli import cli

ROLLOUT = """
from runbook import param, step
from runbook.strategies import rolling

STATE = {state!r}
version = param("version")
token = param("token", secret=True, env="FLEET_TOKEN")


def install(host, shell, params):
    shell(["sh", "-c", 'test ! -e "$0/fail" && echo "$1" > "$0/version"',
           f"{{STATE}}/{{host.name}}", params.version])


release = rolling(["a", "b", "c", "d"], batch=2, max_failures=2, deploy=install)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "runbook.toml").write_text('lock = "memory://"\n')
    for host in "abcd":
        (tmp_path / "state" / host).mkdir(parents=True)
    (tmp_path / "rollout.py").write_text(
        textwrap.dedent(ROLLOUT.format(state=str(tmp_path / "state")))
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNBOOK_ACTOR", "tester")
    monkeypatch.setenv("FLEET_TOKEN", "t0ken-from-env")
    monkeypatch.delenv("RUNBOOK_STORE", raising=False)
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def first_run(project: Path, *failing: str) -> dict:
    for host in failing:
        (project / "state" / host / "fail").touch()
    out = invoke("exec", "rollout.py", "-p", "version=2.0", "--json")
    return json.loads(out.output)


def test_retry_runs_only_the_failed_hosts_and_is_linked(project):
    first = first_run(project, "b", "d")
    assert first["status"] == "succeeded"
    assert first["hosts"] == {"a": "succeeded", "b": "failed", "c": "succeeded", "d": "failed"}
    for host in "bd":
        (project / "state" / host / "fail").unlink()
    (project / "state" / "a" / "version").write_text("untouched\n")
    out = invoke("retry", first["run_id"], "--json")
    assert out.exit_code == 0, out.output
    second = json.loads(out.output)
    assert second["hosts"] == {"b": "succeeded", "d": "succeeded"}
    assert [n for n in second["steps"] if "deploy" in n] == [
        "release.deploy[b]", "release.deploy[d]"
    ]  # fmt: skip
    assert (project / "state" / "a" / "version").read_text() == "untouched\n"
    assert (project / "state" / "d" / "version").read_text() == "2.0\n"
    started = next(e for e in second["audit"] if e["kind"] == "run_started")
    assert started["data"]["retry_of"] == first["run_id"]
    shown = json.loads(invoke("show", second["run_id"], "--json").output)
    assert shown["run"]["options"]["retry_of"] == first["run_id"]
    assert shown["run"]["options"]["limit"] == ["b", "d"]
    assert shown["run"]["params"]["token"] == "***"  # the secret came from FLEET_TOKEN again


def test_show_lists_each_host_and_the_retry_command(project):
    first = first_run(project, "c")
    text = invoke("show", first["run_id"]).output
    assert "hosts:  4 hosts: 3 succeeded, 1 failed (c)" in text
    assert "  c  failed" in text and "deploy failed" in text
    assert f"retry:  runbook retry {first['run_id']}   # c" in text


def test_graph_of_a_run_shows_each_step_and_host_state(project):
    first = first_run(project, "c")
    text = invoke("graph", "rollout.py", "--run", first["run_id"]).output
    assert "[release.deploy[c] ✗ failed]" in text
    assert "[release.deploy[a] ✓ succeeded]" in text
    assert "hosts:  4 hosts: 3 succeeded, 1 failed (c)" in text
    mermaid = invoke("graph", "rollout.py", "--run", first["run_id"], "--format", "mermaid")
    assert "release.deploy[c]<br/>failed" in mermaid.output
    other = invoke("graph", "runbook.toml", "--run", first["run_id"])
    assert other.exit_code == 2


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("unknown", "no run"),
        ("no-failures", "has no failed or unreached hosts: nothing to retry"),
    ],
)
def test_retry_refusals_are_usage_errors(project, setup, message):
    run_id = "20260101-000000-000000"
    if setup == "no-failures":
        run_id = first_run(project)["run_id"]
    out = invoke("retry", run_id)
    assert out.exit_code == 2
    assert message in out.output
    assert "Traceback" not in out.output


def test_a_paused_run_is_not_retried(project):
    source = (project / "rollout.py").read_text()
    source = source.replace("deploy=install)", "deploy=install, after=[gate])")
    source = source.replace(
        "version = param", "@step(approval=True)\ndef gate():\n    return True\n\n\nversion = param"
    )
    (project / "rollout.py").write_text(source)
    out = invoke("exec", "rollout.py", "-p", "version=2.0", "--json")
    paused = json.loads(out.output)
    assert paused["status"] == "paused"
    refused = invoke("retry", paused["run_id"])
    assert refused.exit_code == 2 and "is paused: resume or cancel it" in refused.output
