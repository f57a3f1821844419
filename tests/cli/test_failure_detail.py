"""Why a step failed, where the operator looks: the runbook line, the stderr tail, the whole story
in ``show --step``, GitHub annotations; and what a step logged, live and in ``show``."""

from __future__ import annotations

import json

from .samples import GATED

COMMAND_FAILS = '''
"""A command that fails with a long stderr, after a step that logs."""
from runbook import param, rollback, step

token = param("token", secret=True, default="hunter2-topsecret")


@step(reversible=True)
def stage(log, params):
    log.info("staging with token %s", params.token)
    log.warning("registry is slow")
    return {"ok": True}


@rollback(stage)
def unstage(stage):
    pass


@step
def migrate(stage, shell, params):
    shell(
        "for i in $(seq 1 30); do echo line-$i >&2; done; "
        f"echo 'auth {params.token} refused' >&2; exit 3"
    )
'''

ASSERTS = """
from runbook import step


def helper():
    raise ValueError("the helper broke")


@step
def check():
    value = 1
    helper()
    return value
"""

ROLLBACK_OF_NONE = """
from runbook import rollback, step


@step(reversible=True)
def stage():
    raise RuntimeError("half done")


@rollback(stage)
def unstage(stage):
    print(stage["color"])
"""


def _run_id(invoke) -> str:
    return json.loads(invoke("runs", "--json").stdout)["runs"][0]["run_id"]


def test_failed_command_shows_line_and_masked_stderr_tail(project, invoke):
    path = project.write("cmd.py", COMMAND_FAILS)
    result = invoke("exec", path)
    assert result.exit_code == 1
    out = result.stdout
    lines = out.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("✗ migrate")))
    assert lines[at + 1] == "    at cmd.py:22"
    assert lines[at + 2] == "    stderr (last lines):"
    tail = [line.removeprefix("    │ ") for line in lines[at + 3 : at + 23]]
    assert tail[0] == "line-12" and tail[-1] == "auth *** refused"  # the last 20 lines
    assert "line-11" not in out.split("stderr (last lines):")[1].split("↺")[0]
    assert "hunter2-topsecret" not in result.output


def test_the_failing_frame_is_the_runbooks_innermost(project, invoke):
    path = project.write("asserts.py", ASSERTS)
    result = invoke("exec", path)
    assert result.exit_code == 1
    assert "✗ check  ValueError: the helper broke" in result.stdout
    assert "    at asserts.py:6" in result.stdout.splitlines()


def test_log_lines_are_shown_live_and_kept_for_show(project, invoke):
    path = project.write("cmd.py", COMMAND_FAILS)
    out = invoke("exec", path).stdout
    assert "  │ stage: staging with token ***" in out
    assert "  │ stage: WARNING registry is slow" in out
    assert out.index("staging with token") < out.index("✓ stage")
    shown = invoke("show", _run_id(invoke), "--step", "stage")
    assert shown.exit_code == 0
    assert "  │ INFO staging with token ***" in shown.stdout
    assert "  │ WARNING registry is slow" in shown.stdout
    assert "hunter2-topsecret" not in shown.stdout


def test_quiet_hides_log_lines(project, invoke):
    path = project.write("cmd.py", COMMAND_FAILS)
    assert "staging with token" not in invoke("exec", path, "-q").stdout


def test_show_step_prints_the_whole_traceback_and_stderr(project, invoke):
    path = project.write("cmd.py", COMMAND_FAILS)
    assert invoke("exec", path).exit_code == 1
    run_id = _run_id(invoke)
    summary = invoke("show", run_id).stdout
    assert f"why migrate failed: runbook show {run_id} --step migrate" in summary
    result = invoke("show", run_id, "--step", "migrate")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("step migrate: failed\n")
    assert "step_failed (attempt 1)" in out
    assert f"  at {path}:22" in out
    assert "Traceback (most recent call last):" in out and 'cmd.py", line 22, in migrate' in out
    assert "line-1\n" in out.split("traceback:")[0] or "line-12" in out
    assert "hunter2-topsecret" not in out
    doc = json.loads(invoke("show", run_id, "--step", "migrate", "--json").stdout)
    assert doc["schema"] == "runbook.step/1" and doc["status"] == "failed"
    failed = [e for e in doc["events"] if e["kind"] == "step_failed"]
    assert failed and "Traceback" in failed[0]["data"]["traceback"]


def test_show_step_of_an_unknown_step(project, invoke):
    path = project.write("gated.py", GATED)
    assert invoke("exec", path).exit_code == 3
    result = invoke("show", _run_id(invoke), "--step", "nope")
    assert result.exit_code == 2
    assert "has no step 'nope' (steps: prepare, migrate)" in result.stderr


SECRET_OUTPUT = """
from runbook import param, step

token = param("token", secret=True, default="hunter2-topsecret")


@step
def fetch(params):
    return {"auth": params.token, "user": "deploy"}
"""


def test_show_never_prints_the_internal_redaction_wrapper(project, invoke):
    path = project.write("secret.py", SECRET_OUTPUT)
    assert invoke("exec", path).exit_code == 0
    run_id = _run_id(invoke)
    for args in (
        ("show", run_id),
        ("show", run_id, "--json"),
        ("show", run_id, "--step", "fetch"),
        ("show", run_id, "--step", "fetch", "--json"),
    ):
        out = invoke(*args).stdout
        assert "__runbook_redacted__" not in out, args
        assert "hunter2-topsecret" not in out, args
        assert "deploy" in out, args
    doc = json.loads(invoke("show", run_id, "--json").stdout)
    assert doc["steps"]["fetch"]["output"] == {"auth": "***", "user": "deploy"}
    assert doc["steps"]["fetch"]["output_masked"] is True


def test_github_actions_annotations_for_failed_steps(project, invoke, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(project.root))
    path = project.write("cmd.py", COMMAND_FAILS)
    out = invoke("exec", path).stdout
    (line,) = [x for x in out.splitlines() if x.startswith("::error ")]
    assert line.startswith("::error file=cmd.py,line=22,title=step migrate failed::")
    assert "%0A" in line and "\n" not in line and "hunter2-topsecret" not in line
    monkeypatch.delenv("GITHUB_ACTIONS")
    assert "::error" not in invoke("exec", path).stdout


def test_a_rollback_that_indexes_none_gets_a_hint(project, invoke):
    path = project.write("none.py", ROLLBACK_OF_NONE)
    result = invoke("exec", path)
    assert result.exit_code == 4
    assert "stage had no output (it failed itself), so its rollback received None" in (
        result.stdout
    )
