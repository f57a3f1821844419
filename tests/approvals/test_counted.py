"""What ``approve``, ``gates`` and the prompt count before the engine re-checks: in a
``signers`` env a stored name is nobody until its signature proves it for this plan."""

from __future__ import annotations

from dataclasses import replace

from runbook.approvals import Rules, counted
from runbook.markers import Approval
from runbook.store.base import ApprovalRecord
from runbook.store.sqlite import SqliteStore

from .conftest import Project


def db(project: Project) -> SqliteStore:
    return SqliteStore(project.root / ".runbook" / "runbook.db")


def test_in_a_signers_env_an_unsigned_row_is_nobody_and_a_signed_one_counts(
    project: Project,
) -> None:
    run_id = project.start("alice", "prod")
    assert project.approve(run_id, "carol").exit_code == 0, "carol signs"
    with db(project) as store:
        digest = store.get_run(run_id).options["gates"]["switch"]["plan_hash"]
        (signed,) = store.approvals(run_id, "switch")
    forged = ApprovalRecord(
        run_id, "switch", "bob", "granted", "", None, False, {"plan_hash": digest}
    )
    relabelled = replace(signed, actor="bob")  # carol's signature, recorded as bob's
    rules = Rules(Approval(allow_self=False), "alice", ("alice", "bob", "carol"))  # the gate
    signers = project.root / "allowed_signers"
    assert counted([forged, relabelled, signed], rules, digest, signers) == ["carol"]
    # Without a signers file (an env of claimed names), the names are taken as given.
    assert counted([forged, signed], rules, digest) == ["bob", "carol"]


def test_a_row_bound_to_no_plan_counts_for_no_gate() -> None:
    row = ApprovalRecord("r1", "switch", "bob", "granted", "", None, False, {})
    assert counted([row], Rules(Approval(), "alice"), None) == []


def test_a_forged_unsigned_row_does_not_block_the_real_approver(project: Project) -> None:
    # One forged row claiming bob made bob's own signed approval "bob already approved".
    run_id = project.start("alice", "prod")
    with db(project) as store:
        digest = store.get_run(run_id).options["gates"]["switch"]["plan_hash"]
        store.add_approval(
            ApprovalRecord(
                run_id, "switch", "bob", "granted", "", None, False, {"plan_hash": digest}
            )
        )
    approved = project.approve(run_id, "bob")
    assert approved.exit_code == 0, approved.output
    assert project.resume(run_id).exit_code == 0
    assert project.journal == ["prepare", "switch"]
