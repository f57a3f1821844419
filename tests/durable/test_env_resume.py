"""A stored run keeps the rules of its own env when another process approves or resumes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook import Runner
from runbook.config import load_config
from runbook.errors import ApprovalError

RUNBOOK = """
from runbook import Approval, step

@step
def prepare():
    return "ready"

@step(approval=Approval(allow_self=False))
def switch(prepare):
    return prepare + "!"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "runbook.toml").write_text(
        'store = "sqlite:///.runbook/runs.db"\n'
        'audit = ["sqlite://"]\n'
        'lock = "memory://"\n'
        '[env.dev]\nprotection = "none"\n'
        '[env.prod]\nprotection = "strict"\napprovers = ["bob"]\n'
    )
    (tmp_path / "deploy.py").write_text(RUNBOOK)
    return tmp_path


def test_resume_from_a_dev_shell_keeps_prod_rules(project: Path) -> None:
    config = load_config(project)
    started = Runner.from_config(config, env="prod", actor="alice").run(project / "deploy.py")
    assert started.status == "paused"

    # Another process, started without --env (default env is dev, protection none).
    later = Runner.from_config(config, actor="carol")
    with pytest.raises(ApprovalError, match="approvers: bob"):
        later.approve(started.run_id)  # prod's approver list applies, not dev's
    # Resuming without an approval must not auto-grant under dev's protection "none".
    still = later.resume(started.run_id)
    assert still.status == "paused"
    assert still.env == "prod"

    Runner.from_config(config, actor="bob").approve(started.run_id, comment="lgtm")
    done = later.resume(started.run_id)
    assert done.status == "succeeded"
    assert done.steps["switch"].output == "ready!"
    events = [e for e in later.sinks[0].events() if e.run_id == started.run_id]
    assert {e.env for e in events} == {"prod"}
    resumed = [e for e in events if e.kind == "run_resumed"]
    assert resumed[-1].actor == "carol"
    assert resumed[-1].data["resumed_by"] == "carol"
    granted = [e for e in events if e.kind == "approval_granted"]
    assert [(e.actor, e.data.get("auto", False)) for e in granted] == [("bob", False)]


def test_a_run_being_resumed_elsewhere_cannot_be_resumed_twice(project: Path) -> None:
    import asyncio

    from runbook.errors import LockHeld
    from runbook.locks.manager import LockManager

    config = load_config(project)
    runner = Runner.from_config(config, env="prod", actor="alice")
    started = runner.run(project / "deploy.py")
    Runner.from_config(config, actor="bob").approve(started.run_id)

    async def other_host_holds_the_run() -> None:
        other = LockManager(
            runner.lock_provider, clock=runner.clock, owner="host-b:42:x", actor="dave", lease=30
        )
        await other.acquire([f"run:{started.run_id}"])

    asyncio.run(other_host_holds_the_run())
    with pytest.raises(LockHeld, match="dave"):
        runner.resume(started.run_id)
    assert runner.store.get_steps(started.run_id)["switch"].status == "awaiting_approval"
    assert runner.store.get_run(started.run_id).status == "paused"  # untouched
