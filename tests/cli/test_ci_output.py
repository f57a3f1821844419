"""Output for CI and odd terminals: --junitxml, --quiet, NO_COLOR, ASCII streams, closed pipes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from runbook.cli.building import make_reporter
from runbook.cli.reporter import TerminalReporter
from runbook.cli.text import color_wanted

from .helpers import PYTHON, run_cli, wait_for
from .samples import FAILING, GATED, GREET

SECRET_FAILS = '''
"""A failure whose message carries a secret, after a step that is rolled back."""
from runbook import param, rollback, step

token = param("token", secret=True, default="hunter2-topsecret")


@step(reversible=True)
def stage():
    return {"ok": True}


@rollback(stage)
def unstage(stage):
    pass


@step(when=lambda: False)
def optional():
    return 1


@step
def switch(stage, params):
    raise RuntimeError(f"registry refused token {params.token}")
'''

SLOW_TAIL = '''
"""Prints a step line, then waits for a file, then more steps print lines."""
from pathlib import Path

from runbook import param, step

wait = param("wait", default="go")


@step
def first():
    return 1


@step
def second(first, params):
    Path("reached").write_text("yes")
    import time
    deadline = time.monotonic() + 20
    while not Path(params.wait).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return 2


@step
def third(second):
    Path("third-ran").write_text("yes")
    return 3
'''


def _cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    return {case.get("name"): case for case in suite.findall("testcase")}


# -- --junitxml ----------------------------------------------------------------------------------


def test_junitxml_writes_each_step_as_a_test_case(project, invoke):
    path = project.write("fails.py", SECRET_FAILS)
    report = project.root / "reports" / "run.xml"
    result = invoke("exec", path, "--junitxml", report)
    assert result.exit_code == 1
    raw = report.read_text()
    assert "hunter2-topsecret" not in raw  # masked like every other output
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "2", "1")
    cases = _cases(report)
    failed = cases["switch"].find("failure")
    assert failed is not None and failed.get("type") == "failed"
    assert failed.get("message") == "failed: RuntimeError: registry refused token ***"
    assert "Traceback" in (failed.text or "") and "fails.py" in (failed.text or "")
    undone = cases["stage"].find("failure")
    assert undone is not None and undone.get("type") == "rolled_back"
    assert undone.get("message", "").startswith("rolled back after: switch: RuntimeError")
    skipped = cases["optional"].find("skipped")
    assert skipped is not None and skipped.get("message") == "skipped (when)"


def test_junitxml_of_a_success_has_only_passing_cases(project, invoke):
    path = project.write("greet.py", GREET)
    report = project.root / "ok.xml"
    assert invoke("exec", path, "--junitxml", report).exit_code == 0
    cases = _cases(report)
    assert set(cases) == {"look", "write", "already", "check"}
    assert cases["write"].find("failure") is None
    assert cases["already"].find("skipped") is not None


def test_junitxml_on_resume(project, invoke):
    path = project.write("gated.py", GATED)
    paused_report = project.root / "paused.xml"
    assert invoke("exec", path, "--junitxml", paused_report).exit_code == 3
    gate = _cases(paused_report)["migrate"].find("skipped")
    assert gate is not None and gate.get("type") == "awaiting_approval"
    run_id = json.loads(invoke("runs", "--json").stdout)["runs"][0]["run_id"]
    assert invoke("approve", run_id, "--as", "bob").exit_code == 0
    resumed = project.root / "resumed.xml"
    assert invoke("resume", run_id, "--junitxml", resumed).exit_code == 0
    cases = _cases(resumed)
    assert cases["migrate"].find("failure") is None and cases["migrate"].find("skipped") is None


def test_junitxml_that_cannot_be_written_keeps_the_run_exit_code(project, invoke):
    path = project.write("greet.py", GREET)
    (project.root / "blocker").write_text("a file, not a folder")
    result = invoke("exec", path, "--junitxml", project.root / "blocker" / "r.xml")
    assert result.exit_code == 0
    assert "--junitxml" in result.stderr and "not written" in result.stderr
    assert "Traceback" not in result.stderr


# -- --quiet, --no-color, NO_COLOR --------------------------------------------------------------


def test_quiet_prints_the_summary_and_failures_only(project, invoke):
    path = project.write("failing.py", FAILING)
    result = invoke("exec", path, "--quiet")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert not any(line.startswith("✓") for line in lines)
    assert not any(line.split("  ")[-1] == "rolled back" for line in lines)
    assert any(line.startswith("✗ switch") for line in lines)
    assert any(line.startswith("run rolled back: ") for line in lines)
    ok = invoke("exec", project.write("greet.py", GREET), "-q")
    assert ok.exit_code == 0
    assert [line.split(":")[0] for line in ok.stdout.splitlines()[1:]] == ["run succeeded"]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color():
    assert color_wanted(Tty(), environ={}) is True
    assert color_wanted(io.StringIO(), environ={}) is False
    assert color_wanted(Tty(), environ={"NO_COLOR": "1"}) is False
    assert color_wanted(Tty(), environ={"NO_COLOR": ""}) is True  # no-color.org: non-empty
    assert color_wanted(Tty(), no_color=True, environ={}) is False


def test_no_color_option_and_variable_reach_the_reporter(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr("sys.stdout", Tty())
    assert make_reporter().color is True
    assert make_reporter(no_color=True).color is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert make_reporter().color is False
    out = Tty()
    reporter = TerminalReporter(out, color=False)
    reporter._write(reporter._step_line("failed", "switch", "boom"))
    assert "\x1b[" not in out.getvalue()


# -- ASCII-only streams and closed pipes, in real processes -------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["exec", "greet.py"],
        ["exec", "failing.py"],
        ["exec", "greet.py", "--dry-run"],
        ["list", "greet.py"],
        ["graph", "greet.py"],
        ["runs"],
    ],
)
def test_an_ascii_only_terminal_never_gets_a_traceback(project, args):
    project.write("greet.py", GREET)
    project.write("failing.py", FAILING)
    result = run_cli(*args, cwd=project.root, env={"PYTHONIOENCODING": "ascii"})
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr
    assert result.returncode == (1 if "failing.py" in args else 0), result.stderr
    if args[0] == "exec" and "--dry-run" not in args:
        assert result.stdout.isascii()
        first = "x switch" if "failing.py" in args else "ok look"
        assert any(line.startswith(first) for line in result.stdout.splitlines())


def test_a_closed_pipe_stops_the_output_not_the_run(project):
    path = project.write("tail.py", SLOW_TAIL)
    env = {**os.environ, "RUNBOOK_ACTOR": "tester"}
    env.pop("RUNBOOK_STORE", None)
    proc = subprocess.Popen(
        [str(PYTHON), "-m", "runbook", "exec", str(path)],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the header, then the reader goes away, as `| head -1` does
        proc.stdout.close()
        wait_for(lambda: (project.root / "reached").exists())
        (project.root / "go").touch()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = stderr.decode()
    assert "Traceback" not in text and "BrokenPipe" not in text, text
    assert proc.returncode == 0  # the run's own exit code
    assert (project.root / "third-ran").exists()


@pytest.mark.parametrize("args", [["runs"], ["list", "greet.py"], ["graph", "greet.py"]])
def test_a_closed_pipe_on_a_listing_is_quiet(project, args):
    project.write("greet.py", GREET)
    for _ in range(3):
        assert run_cli("exec", "greet.py", cwd=project.root).returncode == 0
    env = {**os.environ, "RUNBOOK_ACTOR": "tester"}
    command = f"{PYTHON} -m runbook {' '.join(args)} | head -c 1 >/dev/null"
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=project.root,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
