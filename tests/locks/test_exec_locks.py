"""Two real ``runbook exec`` processes and one run lock: the second exits 5 naming the first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runbook.locks.file import FileLocks

pytestmark = pytest.mark.slow

exec_module = pytest.importorskip("runbook.cli.exec_")
if not getattr(exec_module, "COMMANDS", None):  # pragma: no cover - before the exec issue landed
    pytest.skip("runbook exec is not implemented yet", allow_module_level=True)

RUNBOOK = '''
"""Holds its run lock until the test says go."""
import time
from pathlib import Path

from runbook import step

lock = "web-{{env}}"


@step
def hold(ctx):
    Path({signals!r}, f"started-{{ctx.actor}}").touch()
    go = Path({signals!r}, "go")
    deadline = time.monotonic() + 30
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.02)
    return ctx.fencing_token
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    signals = tmp_path / "signals"
    signals.mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "ops"\n\n[tool.runbook]\n'
        'store = "sqlite:///.runbook/runbook.db"\n'
        'audit = ["jsonl://.runbook/audit.jsonl"]\n'
        'lock = "file://.runbook/locks"\n'
        "lease = 5\n",
        encoding="utf-8",
    )
    (tmp_path / "deploy.py").write_text(RUNBOOK.format(signals=str(signals)), encoding="utf-8")
    return tmp_path


def _exec(project: Path, actor: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runbook",
            "exec",
            "deploy.py",
            "--env",
            "prod",
            "--as",
            actor,
            *args,
        ],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30  # bounded polling of a real process
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended early (exit {proc.returncode}):\n{out}\n{err}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def test_second_run_exits_5_naming_the_holder_then_runs_once_the_lock_is_free(
    project: Path,
) -> None:
    signals = project / "signals"
    first = _exec(project, "alice")
    try:
        _wait_for(signals / "started-alice", first)
        (holder,) = FileLocks(project / ".runbook" / "locks").held()
        assert (holder.name, holder.actor) == ("web-prod", "alice")

        second = _exec(project, "bob")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 5, out + err
        assert holder.owner in err and "alice" in err and "web-prod" in err
        assert not (signals / "started-bob").exists(), "a step ran without the lock"

        waiting = _exec(project, "carol", "--lock-timeout", "30", "--json")
        (signals / "go").touch()
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, out + err
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, out + err
        tokens = json.loads(out)["steps"]["hold"]["output"], holder.token
        assert tokens[0] > tokens[1], "the next holder must get a larger fencing token"
        assert FileLocks(project / ".runbook" / "locks").held() == []
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
