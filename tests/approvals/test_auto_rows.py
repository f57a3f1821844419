"""An automatic grant is the engine's own, where protection is "none": a stored ``auto`` row
opens no gate that waits for a person, and counts toward nobody's quorum."""

from __future__ import annotations

from typing import Any

import pytest

from runbook.store.base import ApprovalRecord
from runbook.store.sqlite import SqliteStore

from .conftest import Project


def forge_auto(project: Project, run_id: str, actor: str, data: dict[str, Any]) -> None:
    """Someone with write access to the store records an automatic grant of the gate."""
    with SqliteStore(project.root / ".runbook" / "runbook.db") as db:
        digest = db.get_run(run_id).options["gates"]["switch"]["plan_hash"]
        hashed = {k: (digest if v == "PLAN" else v) for k, v in data.items()}
        db.add_approval(ApprovalRecord(run_id, "switch", actor, "granted", "", None, True, hashed))


@pytest.mark.parametrize("env", ["prod", "claimed", "stage"])
@pytest.mark.parametrize("data", [{"plan_hash": "PLAN"}, {}], ids=["this-plan", "no-plan"])
@pytest.mark.parametrize("actor", ["runbook", "alice"])
def test_a_stored_auto_grant_does_not_open_a_gate_that_waits_for_a_person(
    project: Project, env: str, data: dict[str, Any], actor: str
) -> None:
    run_id = project.start("alice", env)
    forge_auto(project, run_id, actor, data)
    done = project.resume(run_id, "alice")
    assert done.exit_code == 3, done.output  # still waiting for a person
    assert "switch" not in project.journal
    (refused,) = project.events("approval_refused", run_id)
    assert refused["actor"] == "runbook" and refused["data"]["claimed_actor"] == actor
    assert (
        f"env protection {'standard' if env == 'stage' else 'strict'!r}"
        in (refused["data"]["reason"])
    )


def test_a_stored_auto_grant_is_no_approver_toward_the_quorum(project: Project) -> None:
    project.write("Approval()")
    run_id = project.start("alice", "claimed")
    forge_auto(project, run_id, "mallory", {"plan_hash": "PLAN"})
    # Before, the auto row filled the quorum of one: bob's approval was refused as
    # "approving past the quorum".
    approved = project.invoke("approve", run_id, actor="bob")
    assert approved.exit_code == 0, approved.output
    done = project.resume(run_id, "alice")
    assert done.exit_code == 0, done.output
    assert project.journal == ["prepare", "switch"]
