"""The real CLI in real processes: ``python -m runbook`` and the ``runbook`` console script.

One test per command at least, the deploy example end to end over HTTP, and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pytest

from .helpers import CONSOLE_SCRIPT, PYTHON, pids_serving_under, run_cli, wait_for
from .samples import GATED, GREET, WAITS

pytestmark = pytest.mark.slow


def served_version(root) -> tuple[int, str]:
    port = int((root / "active_port").read_text())
    response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    return response.status_code, response.json()["version"]


def test_deploy_example_blue_green_end_to_end(project, servers):
    path = project.example("deploy.py")
    first = run_cli("exec", path, "-p", "version=1.0", cwd=project.root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert served_version(servers) == (200, "1.0")

    second = run_cli("exec", path, "-p", "version=1.1", cwd=project.root, script=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "✓ stop_old" in second.stdout
    assert served_version(servers) == (200, "1.1")
    assert len(pids_serving_under(servers)) == 1  # the old server was stopped

    bad = run_cli(
        "exec",
        path,
        "-p",
        "version=1.2",
        "-p",
        "fail_health=true",
        "-p",
        "health_timeout=0.5",
        cwd=project.root,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "✗ health" in bad.stdout and "↺ start" in bad.stdout and "↺ build" in bad.stdout
    assert "run rolled back" in bad.stdout
    assert served_version(servers) == (200, "1.1")
    assert len(pids_serving_under(servers)) == 1  # the broken release's server is gone
    assert not (servers / "releases" / "1.2").exists()


def test_deploy_failing_first_upgrade_keeps_the_old_version(project, servers):
    path = project.example("deploy.py")
    assert run_cli("exec", path, "-p", "version=1.0", cwd=project.root).returncode == 0
    bad = run_cli(
        "exec",
        path,
        "-p",
        "version=1.1",
        "-p",
        "fail_health=yes",
        "-p",
        "health_timeout=0.3",
        "--json",
        cwd=project.root,
    )
    assert bad.returncode == 1
    data = json.loads(bad.stdout)
    assert data["status"] == "rolled_back"
    assert data["steps"]["health"]["status"] == "failed"
    assert data["steps"]["switch"]["status"] == "pending"
    assert served_version(servers) == (200, "1.0")
    assert (servers / "current").resolve().name == "1.0"


def test_deploy_rejects_unsafe_version_as_usage_error(project, servers):
    path = project.example("deploy.py")
    result = run_cli("exec", path, "-p", "version=../../etc", cwd=project.root)
    assert result.returncode == 2
    assert "parameter 'version'" in result.stderr and "Traceback" not in result.stderr
    assert not servers.exists()


def _interrupt(project, mode: str) -> subprocess.CompletedProcess[str]:
    path = project.write("waits.py", WAITS)
    env = {**os.environ, "RUNBOOK_ACTOR": "tester"}
    env.pop("RUNBOOK_STORE", None)
    proc = subprocess.Popen(
        [str(PYTHON), "-m", "runbook", "exec", str(path), "-p", f"mode={mode}"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for(lambda: (project.root / "waiting").exists())
        proc.send_signal(signal.SIGINT)
        if mode == "sync":
            # A thread cannot be interrupted: the run waits for the step to return, then rolls
            # back. A second Ctrl-C does not abandon that.
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
            assert proc.poll() is None
            (project.root / "go").touch()
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_sigint_cancels_rolls_back_and_exits_130(project, mode):
    done = _interrupt(project, mode)
    assert done.returncode == 130, done.stdout + done.stderr
    assert "SIGINT: cancelling the run" in done.stderr
    if mode == "sync":
        # True: the run is waiting for the step's thread, not yet for a rollback.
        assert "already cancelling; waiting for wait_sync to stop" in done.stderr
        assert "then rolling back what completed" in done.stderr
    assert "↺ prepare" in done.stdout and "run cancelled" in done.stdout


def test_sigint_interrupts_a_sync_step_waiting_in_clock_sleep(project):
    """The documented cooperative wait ends at once: the step asked for 60 s, Ctrl-C wins."""
    path = project.write("waits.py", WAITS)
    env = {**os.environ, "RUNBOOK_ACTOR": "tester"}
    env.pop("RUNBOOK_STORE", None)
    proc = subprocess.Popen(
        [str(PYTHON), "-m", "runbook", "exec", str(path), "-p", "mode=clock"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for(lambda: (project.root / "waiting").exists())
        proc.send_signal(signal.SIGINT)
        # Before: the thread slept its 60 s out (and exec left via os._exit); 20 s is the bound.
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout + stderr
    assert "↺ prepare" in stdout and "run cancelled" in stdout
    assert (project.root / "rolled-back").exists()
    assert not (project.root / "slept-through").exists()
    assert "still running in a worker thread" not in stderr
    assert (project.root / "rolled-back").exists()
    assert not (project.root / "prepared").exists()
    runs = json.loads(run_cli("runs", "--json", cwd=project.root).stdout)["runs"]
    assert runs[0]["status"] == "cancelled"


def test_every_store_command_in_a_process(project):
    path = project.write("gated.py", GATED)
    paused = run_cli("exec", path, cwd=project.root)
    assert paused.returncode == 3
    run_id = json.loads(run_cli("runs", "--json", cwd=project.root).stdout)["runs"][0]["run_id"]
    assert f"runbook approve {run_id} --step migrate" in paused.stdout

    shown = run_cli("show", run_id, cwd=project.root, script=True)
    assert shown.returncode == 0 and "migrate  awaiting approval" in shown.stdout
    listed = run_cli("runs", "--status", "paused", cwd=project.root, script=True)
    assert run_id in listed.stdout

    approved = run_cli("approve", run_id, "--step", "migrate", "--as", "bob", cwd=project.root)
    assert approved.returncode == 0 and "approved migrate" in approved.stdout
    resumed = run_cli("resume", run_id, cwd=project.root, script=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (project.root / "migrated").exists()

    # deny and cancel on two more paused runs
    for command, extra in (("deny", ["--reason", "no"]), ("cancel", [])):
        assert run_cli("exec", path, cwd=project.root).returncode == 3
        listed = run_cli("runs", "--status", "paused", "--json", cwd=project.root)
        rid = json.loads(listed.stdout)["runs"][0]["run_id"]
        done = run_cli(command, rid, *extra, cwd=project.root, script=command == "cancel")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "↺ prepare" in done.stdout


def test_inspect_commands_in_a_process(project):
    path = project.write("greet.py", GREET)
    listed = run_cli("list", path, "--json", cwd=project.root, script=True)
    assert listed.returncode == 0 and json.loads(listed.stdout)["name"] == "greet"
    graph = run_cli("graph", path, "--format", "mermaid", cwd=project.root)
    assert graph.returncode == 0 and graph.stdout.startswith("flowchart TD")
    plugins = run_cli("plugins", cwd=project.root, script=True)
    assert plugins.returncode == 0 and "runbook.resources" in plugins.stdout


def test_exec_errors_in_a_process_are_one_line(project):
    missing = run_cli("exec", "missing.py", cwd=project.root, script=True)
    assert missing.returncode == 2
    assert missing.stderr == "runbook: error: no such runbook file: missing.py\n"
    path = project.write("greet.py", GREET)
    ok = run_cli("exec", path, "--json", cwd=project.root)
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "succeeded"


def test_console_script_exists():
    assert CONSOLE_SCRIPT.exists()


def test_crashed_run_shows_as_gone_and_resumes_with_a_decision(project):
    path = project.write("waits.py", WAITS)
    env = {**os.environ, "RUNBOOK_ACTOR": "tester"}
    env.pop("RUNBOOK_STORE", None)
    proc = subprocess.Popen(
        [str(PYTHON), "-m", "runbook", "exec", str(path), "-p", "mode=sync"],
        cwd=project.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(lambda: (project.root / "waiting").exists())
        proc.kill()  # kill -9: no rollback, the store says which step was running
    finally:
        proc.wait()
    listed = run_cli("runs", cwd=project.root)
    assert f"running (process {proc.pid} is gone: resume or cancel it)" in listed.stdout
    run_id = json.loads(run_cli("runs", "--json", cwd=project.root).stdout)["runs"][0]["run_id"]

    undecided = run_cli("resume", run_id, cwd=project.root)
    assert undecided.returncode == 2
    assert "wait_sync" in undecided.stderr and "--retry-interrupted" in undecided.stderr

    (project.root / "go").touch()
    resumed = run_cli("resume", run_id, "--retry-interrupted", cwd=project.root, script=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "✓ wait_sync" in resumed.stdout
    assert "prepare" not in resumed.stdout  # finished steps are not re-run
    shown = run_cli("show", run_id, cwd=project.root)
    assert "wait_sync  retry (by tester)" in shown.stdout
