"""A lock holder frozen with SIGSTOP past its lease, then woken: real ``runbook exec`` processes
and a real lock provider (SQLite, flock files).

While the first run is frozen its lease runs out at the provider and a second run takes the lock
(a larger fencing token). When the first is woken its step function returns, but the lease was
lost at a moment of the step: the step must fail with ``LeaseLost`` and the first run must never
report releasing a lock it no longer held (that ``lock_released`` would land in the middle or
after the next holder's tenure).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runbook.testing.processes import ProcessGroup

pytestmark = pytest.mark.slow

LEASE = 3  # seconds: short, so the frozen holder loses it soon; long enough for a loaded box

RUNBOOK = '''
"""Holds its lock until the test says go; says when it started and when its function returned."""
import time
from pathlib import Path

from runbook import step

{run_lock}

@step({step_lock})
def hold(ctx):
    signals = Path({signals!r})
    (signals / f"started-{{ctx.actor}}").write_text(str(ctx.fencing_token))
    deadline = time.monotonic() + 60
    while not (signals / f"go-{{ctx.actor}}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.01)  # real time on purpose: a frozen process, not a cooperative wait
    (signals / f"returned-{{ctx.actor}}").touch()
    return ctx.fencing_token
'''

PROVIDERS = {
    "sqlite": "sqlite:///.runbook/locks.db",
    "file": "file://.runbook/locks",
}


def _project(tmp_path: Path, provider: str, kind: str) -> Path:
    signals = tmp_path / "signals"
    signals.mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "ops"\n\n[tool.runbook]\n'
        'store = "sqlite:///.runbook/runbook.db"\n'
        'audit = ["jsonl://.runbook/audit.jsonl"]\n'
        f'lock = "{PROVIDERS[provider]}"\n'
        f"lease = {LEASE}\n",
        encoding="utf-8",
    )
    source = RUNBOOK.format(
        signals=str(signals),
        run_lock='lock = "web-{env}"' if kind == "run lock" else "",
        step_lock='lock="db-{env}"' if kind == "step lock" else "",
    )
    (tmp_path / "deploy.py").write_text(source, encoding="utf-8")
    return signals


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60  # bounded polling of a real process
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended early (exit {proc.returncode}):\n{out}\n{err}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def _audit(project: Path) -> list[dict]:
    lines = (project / ".runbook" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("provider", "kind"),
    [("sqlite", "step lock"), ("file", "step lock"), ("sqlite", "run lock")],
)
def test_a_holder_frozen_past_its_lease_fails_leaselost_and_never_releases_late(
    tmp_path: Path, provider: str, kind: str
) -> None:
    signals = _project(tmp_path, provider, kind)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    argv = ("runbook", "exec", "deploy.py", "--env", "prod", "--json")
    with ProcessGroup(tmp_path, cwd=tmp_path, env=env) as spawn:
        first = spawn.module(*argv, "--as", "alice")
        _wait_for(signals / "started-alice", first)
        os.kill(first.pid, signal.SIGSTOP)  # frozen mid-step, holding the lock
        try:
            # The second run waits for the lock; it gets it once the frozen lease has run out.
            second = spawn.module(*argv, "--as", "bob", "--lock-timeout", "60")
            _wait_for(signals / "started-bob", second)
        finally:
            (signals / "go-alice").touch()  # the first run's step returns as soon as it wakes
            os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=60)
        assert (signals / "returned-alice").exists(), "the frozen step's function never returned"
        assert first.returncode == 1, out + err
        hold = json.loads(out)["steps"]["hold"]
        assert hold["status"] == "failed", hold
        assert "LeaseLost" in hold["error"], hold

        (signals / "go-bob").touch()
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, out + err
        assert json.loads(out)["status"] == "succeeded"

    old = int((signals / "started-alice").read_text())
    new = int((signals / "started-bob").read_text())
    assert new > old, "the next holder must get a larger fencing token"
    events = _audit(tmp_path)
    first_id = next(e["run_id"] for e in events if e["actor"] == "alice")
    released = [
        e for e in events if e["kind"] == "lock_released" and e["data"]["fencing_token"] == old
    ]
    assert released == [], "the run that lost its lease reported releasing it"
    acquired = [i for i, e in enumerate(events) if e["kind"] == "lock_acquired"]
    tokens = [events[i]["data"]["fencing_token"] for i in acquired]
    assert tokens == [old, new]
    failed = [e for e in events if e["run_id"] == first_id and e["kind"] == "step_failed"]
    assert [e["step"] for e in failed] == ["hold"] and "LeaseLost" in failed[0]["data"]["error"]
    verified = subprocess.run(
        [sys.executable, "-m", "runbook", "audit", "verify"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
