"""Run locks through the engine: kept across an approval pause, progress while waiting."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from runbook import Runner, hookimpl
from runbook.errors import LockHeld

GATED = """
from runbook import step
lock = "web-{env}"

@step
def stage():
    return 1

@step(approval=True, lock="db")
def switch(stage, ctx):
    return ctx.fencing_token
"""

OTHER = """
from runbook import step
lock = "web-{env}"

@step
def touch():
    return 1
"""


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "gated.py").write_text(GATED)
    (tmp_path / "other.py").write_text(OTHER)
    return tmp_path / "gated.py", tmp_path / "other.py"


def _runner(store: str, locks: str, actor: str, **kw) -> Runner:
    return Runner(store=store, locks=locks, actor=actor, env="prod", **kw)


def test_a_paused_run_keeps_its_run_lock_until_it_ends(paths, fake_clock) -> None:
    gated, other = paths
    store, locks = f"memory://{uuid.uuid4().hex}", f"memory://{uuid.uuid4().hex}"
    paused = _runner(store, locks, "alice").run(gated)
    assert paused.status == "paused"
    held = {lease.name: lease for lease in _runner(store, locks, "x").lock_provider.held()}
    assert set(held) == {"web-prod"}  # the step lock of the gate was never taken
    assert held["web-prod"].owner == paused.run_id
    assert held["web-prod"].expires_at - held["web-prod"].acquired_at > 24 * 3600

    with pytest.raises(LockHeld, match=paused.run_id):
        _runner(store, locks, "bob").run(other)

    _runner(store, locks, "bob").approve(paused.run_id)
    done = _runner(store, locks, "carol").resume(paused.run_id)
    assert done.status == "succeeded"
    assert isinstance(done.steps["switch"].output, int)  # ctx.fencing_token of the db lock
    assert _runner(store, locks, "x").lock_provider.held() == []
    assert _runner(store, locks, "bob").run(other).status == "succeeded"


def test_keep_lock_when_paused_false_releases_it(paths) -> None:
    gated, other = paths
    store, locks = f"memory://{uuid.uuid4().hex}", f"memory://{uuid.uuid4().hex}"
    paused = _runner(store, locks, "alice", keep_lock_when_paused=False).run(gated)
    assert paused.status == "paused"
    assert _runner(store, locks, "x").lock_provider.held() == []
    assert _runner(store, locks, "bob").run(other).status == "succeeded"


class Progress:
    def __init__(self) -> None:
        self.messages: list[str] = []

    @hookimpl
    def runbook_progress(self, message: str) -> None:
        self.messages.append(message)


def test_waiting_for_a_lock_reports_the_holder(paths, fake_clock) -> None:
    _, other = paths
    locks = f"memory://{uuid.uuid4().hex}"
    from runbook.locks.memory import MemoryLocks

    MemoryLocks.open(locks).acquire("web-prod", "run-of-dave", actor="dave", lease=600)
    progress = Progress()
    runner = Runner(
        locks=locks,
        actor="bob",
        env="prod",
        lock_timeout=30,
        plugins=[progress],
        resources={"clock": fake_clock},
    )
    with pytest.raises(LockHeld, match="dave"):
        runner.run(other)
    assert progress.messages, "no progress while waiting"
    assert "waiting for lock web-prod held by run run-of-dave (dave)" in progress.messages[0]
    assert sum(fake_clock.sleeps) == pytest.approx(30, abs=0.5)
