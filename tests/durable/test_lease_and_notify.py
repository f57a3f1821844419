"""A lost lease fails the step it protected; a dead notification channel never fails the run."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

from runbook import Runner

SLOW_LOCKED = """
import asyncio
from runbook import rollback, step

@step(reversible=True)
def prepare():
    return "ok"

@rollback(prepare)
def unprepare(prepare):
    pass

@step(lock="db-{env}")
async def migrate(prepare):
    await asyncio.sleep(5)   # a bound: the lease is lost at once, which cancels this
    return "migrated"
"""


def test_a_lost_lease_fails_the_step_and_rolls_back(tmp_path: Path, stolen_leases: Any) -> None:
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "locked.py"
    path.write_text(SLOW_LOCKED)
    runner = Runner(
        store=f"memory://{uuid.uuid4().hex}", locks=stolen_leases(), lease=30, actor="alice"
    )
    started = time.perf_counter()
    result = runner.run(path)
    assert time.perf_counter() - started < 2, "the step must stop at the lost lease, not finish"
    assert result.status == "rolled_back"
    assert result.steps["migrate"].status == "failed"
    assert "LeaseLost" in result.steps["migrate"].error
    assert "taken over" in result.steps["migrate"].error
    assert result.steps["prepare"].status == "rolled_back"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_notifier_on_a_closed_port_never_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "ok.py"
    path.write_text("from runbook import step\n@step\ndef a():\n    return 1\n")
    url = f"webhook+http://127.0.0.1:{_closed_port()}/hook"
    runner = Runner(
        store=f"memory://{uuid.uuid4().hex}",
        actor="alice",
        flush_deadline=3.0,
        notify=[{"to": url, "on": ["run_finished"]}],
    )
    started = time.perf_counter()
    result = runner.run(path)
    elapsed = time.perf_counter() - started
    assert result.status == "succeeded"
    assert result.exit_code == 0
    assert elapsed < 3.5, f"the dead channel held the run for {elapsed:.1f}s"
    failed = [e for e in result.audit if e.kind == "notification_failed"]
    assert len(failed) == 1
    assert failed[0].data["channel"].startswith("webhook+http://127.0.0.1")
    assert failed[0].data["kind"] == "run_finished"
