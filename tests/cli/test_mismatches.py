"""What the operator is told: the small mismatches between what one command says and the next."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .helpers import run_cli
from .samples import FAILING, GATED, GREET

LOCKED_GATE = '''
"""A gate under a run lock: a paused run keeps the lock."""
from runbook import step

lock = "web-{env}"


@step(approval=True)
def switch():
    return {"switched": True}
'''


def _run_id(invoke, *args: str) -> str:
    return json.loads(invoke("runs", "--json", *args).stdout)["runs"][0]["run_id"]


# -- every --json document names its schema --------------------------------------------------


def test_every_json_document_has_a_schema(project, invoke):
    greet = project.write("greet.py", GREET)
    ran = json.loads(invoke("exec", greet, "--json").stdout)
    assert ran["schema"] == "runbook.run/1" and ran["status"] == "succeeded"
    dry = json.loads(invoke("exec", greet, "--dry-run", "--json").stdout)
    assert dry["schema"] == "runbook.run/1" and dry["dry_run"] is True
    run_id = ran["run_id"]
    documents = {
        ("runs", "--json"): "runbook.runs/1",
        ("show", run_id, "--json"): "runbook.show/1",
        ("list", greet, "--json"): "runbook.plan/1",
        ("audit", "--json"): "runbook.audit/1",
        ("audit", "verify", "--json"): "runbook.audit-verify/1",
        ("locks", "--json"): "runbook.locks/1",
        ("plugins", "--json"): "runbook.plugins/1",
    }
    for args, schema in documents.items():
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
        data = json.loads(result.stdout)
        assert next(iter(data)) == "schema" and data["schema"] == schema, args
    assert json.loads(invoke("runs", "--json").stdout)["runs"][0]["run_id"] == run_id
    events = json.loads(invoke("audit", "--json").stdout)["events"]
    assert {e["run_id"] for e in events} == {run_id}


def test_resume_deny_cancel_json_are_run_documents(project, invoke):
    path = project.write("gated.py", GATED)
    assert invoke("exec", path).exit_code == 3
    cancelled = json.loads(invoke("cancel", _run_id(invoke), "--json").stdout)
    assert cancelled["schema"] == "runbook.run/1" and cancelled["status"] == "cancelled"


# -- runs --status takes what runs prints ------------------------------------------------------


def test_runs_status_accepts_the_printed_form(project, invoke):
    path = project.write("failing.py", FAILING)
    assert invoke("exec", path).exit_code == 1
    listed = invoke("runs")
    assert "rolled back" in listed.stdout
    for spelling in ("rolled back", "rolled_back", "Rolled-Back"):
        result = invoke("runs", "--status", spelling, "--json")
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)["runs"]) == 1
    assert json.loads(invoke("runs", "--status", "succeeded", "--json").stdout)["runs"] == []
    bad = invoke("runs", "--status", "exploded")
    assert bad.exit_code == 2 and "exploded" in bad.stderr


# -- cancel of a run that already ended --------------------------------------------------------


def test_cancel_of_an_ended_run_says_nothing_to_cancel(project, invoke):
    path = project.write("greet.py", GREET)
    assert invoke("exec", path).exit_code == 0
    result = invoke("cancel", _run_id(invoke))
    assert result.exit_code == 2
    assert "has ended (succeeded); nothing to cancel" in result.stderr
    assert "resume" not in result.stderr


# -- params on the command line ----------------------------------------------------------------


def test_misspelt_param_gets_did_you_mean(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "-p", "nmae=ops")
    assert result.exit_code == 2
    assert "unknown parameter 'nmae'; did you mean 'name'?" in result.stderr
    assert not (project.root / "out.txt").exists()


def test_duplicate_param_is_a_usage_error(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "-p", "name=a", "-p", "name=b")
    assert result.exit_code == 2
    assert "-p name is given more than once" in result.stderr
    assert result.stdout == "" and not (project.root / "out.txt").exists()


def test_bad_default_is_a_definition_error_before_anything_runs(project, invoke):
    path = project.write(
        "bad.py",
        "from runbook import param, step\n\nn = param('n', type=int, default='x')\n\n\n"
        "@step\ndef s():\n    open('ran', 'w').close()\n",
    )
    result = invoke("exec", path)
    assert result.exit_code == 2
    assert f"{path}:3: parameter 'n': default refused: expected int, got 'x'" in result.stderr
    assert not (project.root / "ran").exists()


# -- read-only commands create nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["runs"],
        ["runs", "--json"],
        ["show", "20261201-000000-abcdef"],
        ["locks"],
        ["locks", "--json"],
        ["audit"],
        ["audit", "verify"],
        ["list", "greet.py"],
        ["graph", "greet.py"],
        ["plugins"],
        ["approve", "20261201-000000-abcdef"],
        ["resume", "20261201-000000-abcdef"],
        ["cancel", "20261201-000000-abcdef"],
    ],
)
def test_read_only_commands_never_create_the_state_folder(tmp_path: Path, args):
    """No config at all: the defaults point at ``.runbook/`` in the folder; it must stay absent."""
    (tmp_path / "greet.py").write_text(GREET)
    result = run_cli(*args, cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2), result.stderr
    if args[0] in ("show", "approve", "resume", "cancel"):
        assert result.returncode == 2
        assert "no run '20261201-000000-abcdef'" in result.stderr
    assert not (tmp_path / ".runbook").exists(), args


def test_runs_says_no_runs_without_a_store(tmp_path: Path):
    result = run_cli("runs", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "no runs\n"


# -- a paused run's lock ------------------------------------------------------------------------


def test_lock_held_by_a_paused_run_says_so_and_how_to_release_it(project, invoke):
    path = project.write("gate.py", LOCKED_GATE)
    assert invoke("exec", path).exit_code == 3
    paused = _run_id(invoke)
    second = invoke("exec", path)
    assert second.exit_code == 5
    assert f"held by run {paused} (tester)" in second.stderr
    assert "that run is paused, waiting for approval" in second.stderr
    assert f"`runbook cancel {paused}` releases the lock" in second.stderr
    assert invoke("cancel", paused).exit_code == 0
    third = invoke("exec", path)
    assert third.exit_code == 3, third.output  # the lock was free: it paused at its own gate


def test_paused_lease_comes_from_config(project, invoke):
    config = project.root / "runbook.toml"
    config.write_text(config.read_text() + "paused_lease = 3600\n")
    path = project.write("gate.py", LOCKED_GATE)
    before = time.time()
    assert invoke("exec", path).exit_code == 3
    (lock,) = json.loads(invoke("locks", "--json").stdout)["locks"]
    assert lock["name"] == "web-dev"
    assert 3500 < lock["expires_in"] <= 3600 + (time.time() - before)


def test_paused_lease_must_be_positive(project, invoke):
    config = project.root / "runbook.toml"
    config.write_text(config.read_text() + "paused_lease = 0\n")
    result = invoke("runs")
    assert result.exit_code == 2 and "paused_lease" in result.stderr


# -- an audit sink that refuses an append -------------------------------------------------------

REFUSING_SINK = """
from runbook.errors import AuditError
from runbook.hookspecs import Provider, hookimpl


class Sink:
    url = "refuse://"
    queryable = False
    best_effort = False

    def __init__(self):
        self.taken = 0

    def append(self, event):
        self.taken += 1
        if self.taken > 2:
            raise AuditError("disk full")
        return event

    def close(self):
        pass


@hookimpl
def runbook_audit_sinks():
    return [Provider(scheme="refuse", open=lambda url, **options: Sink())]
"""


def test_a_refused_audit_append_exits_1_with_a_clear_message(project, invoke, monkeypatch):
    project.write("refusing_sink.py", REFUSING_SINK)
    monkeypatch.syspath_prepend(str(project.root))
    (project.root / "runbook.toml").write_text(
        'store = "sqlite:///.runbook/runbook.db"\naudit = ["refuse://x"]\n'
        'plugins = ["refusing_sink"]\n'
    )
    path = project.write("greet.py", GREET)
    result = invoke("exec", path)
    assert result.exit_code == 1, result.output
    # the refused event is the first step's step_started: it never ran, so it is not shown
    # interrupted (it may not have half-happened) but cancelled, as its stored row says
    assert "1 cancelled, 3 not run in" in result.stdout
    assert "error: AuditError: disk full" in result.stdout
    assert "a required audit sink refused an event" in result.stdout
    assert "Traceback" not in result.output
