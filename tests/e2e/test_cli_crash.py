"""`runbook exec` killed with SIGKILL mid-step, then `runbook resume`; a corrupt store file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNBOOK = (Path(__file__).parents[1] / "durable" / "crashy.template").read_text()

CONFIG = """
store = "sqlite:///.runbook/runbook.db"
audit = ["jsonl://.runbook/audit.jsonl"]
lock = "file://.runbook/locks"
"""


def _cli(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNBOOK_ACTOR": "alice"}
    return subprocess.run(
        [sys.executable, "-m", "runbook", *args],
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        **kw,
    )


@pytest.mark.slow
def test_sigkill_exec_then_resume(tmp_path: Path) -> None:
    (tmp_path / "runbook.toml").write_text(CONFIG)
    (tmp_path / "crashy.py").write_text(RUNBOOK.replace("IDEMPOTENT", "False"))
    log = tmp_path / "steps.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbook", "exec", "crashy.py", "-p", f"log={log}"],
        cwd=tmp_path,
        env={**os.environ, "RUNBOOK_ACTOR": "alice"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not (log.exists() and "second" in log.read_text()):  # bounded polling of a process
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    runs = json.loads(_cli(tmp_path, "runs", "--json").stdout)["runs"]
    (run,) = runs
    assert run["status"] == "running"

    refused = _cli(tmp_path, "resume", run["run_id"])
    assert refused.returncode == 2
    assert "--retry-interrupted" in refused.stderr and "Traceback" not in refused.stderr
    assert log.read_text().split() == ["first", "second"]

    log.with_suffix(".release").touch()
    resumed = _cli(tmp_path, "resume", run["run_id"], "--retry-interrupted", "--as", "bob")
    assert resumed.returncode == 0, resumed.stderr
    assert log.read_text().split() == ["first", "second", "second", "third"]
    shown = json.loads(_cli(tmp_path, "show", run["run_id"], "--json").stdout)
    assert shown["run"]["status"] == "succeeded"
    assert "retry" in json.dumps(shown) and "bob" in json.dumps(shown)
    assert _cli(tmp_path, "audit", "verify").returncode == 0


def test_a_corrupt_store_file_is_a_clear_usage_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "ok.py").write_text("from runbook import step\n@step\ndef a():\n    return 1\n")
    garbage = tmp_path / "runs.db"
    garbage.write_bytes(b"this is not a database\n" * 100)
    for args in (["exec", "ok.py"], ["runs"]):
        proc = _cli(tmp_path, *args, "--store", f"sqlite:///{garbage}")
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "not a usable SQLite database" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert garbage.read_bytes() == b"this is not a database\n" * 100  # nothing was modified
