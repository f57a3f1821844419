"""Plan-bound gates: an approval is for one run, one gate, one plan; drift asks again."""

from __future__ import annotations

import json
from typing import Any

from runbook.store.base import ApprovalRecord
from runbook.store.sqlite import SqliteStore

from .conftest import RUNBOOK, Project


def store(project: Project) -> SqliteStore:
    return SqliteStore(project.root / ".runbook" / "runbook.db")


def test_a_signature_moved_to_another_run_does_not_count(project: Project) -> None:
    first, second = project.start(), project.start()
    assert project.approve(first, "bob").exit_code == 0
    with store(project) as db:
        (signed,) = db.approvals(first, "switch")
        target = db.get_run(second).options["gates"]["switch"]["plan_hash"]
        # Someone with write access to the store copies bob's signed approval, even fixing up
        # the plan hash so that it names the other run's plan.
        moved = ApprovalRecord(
            second, "switch", "bob", "granted", "", signed.at, False, {**signed.data}
        )
        db.add_approval(moved)
        db.add_approval(
            ApprovalRecord(
                second,
                "switch",
                "bob",
                "granted",
                "",
                signed.at,
                False,
                {**signed.data, "plan_hash": target},
            )
        )
    done = project.resume(second, "bob")
    assert done.exit_code == 3, done.output  # still waiting: nothing counted
    assert "switch" not in project.journal
    (refused,) = project.events("approval_refused", second)
    assert refused["actor"] == "runbook" and refused["data"]["claimed_actor"] == "bob"
    assert "does not verify" in refused["data"]["reason"]


def test_the_same_key_cannot_approve_another_gate_or_plan_by_replay(project: Project) -> None:
    run_id = project.start()
    assert project.approve(run_id, "bob").exit_code == 0
    with store(project) as db:
        (signed,) = db.approvals(run_id, "switch")
        db.add_approval(
            ApprovalRecord(
                run_id,
                "switch",
                "bob",
                "granted",
                "",
                signed.at,
                False,
                {**signed.data, "plan_hash": "0" * 64},
            )
        )
    project.set_replicas(5)  # the plan changes: bob's approval was for replicas=3
    done = project.resume(run_id, "bob")
    assert done.exit_code == 3
    assert "switch" not in project.journal


def test_edit_approve_restore_is_refused_as_drift(project: Project) -> None:
    original = project.write("Approval(min=2, allow_self=False)")
    run_id = project.start(actor="alice")
    text = original.read_text()
    original.write_text(text.replace("Approval(min=2, allow_self=False)", "True"))
    done = project.approve(run_id, "alice")  # loosened in the file, approved by the initiator
    assert done.exit_code == 2
    assert "drift" in done.stderr and "changed since run" in done.stderr
    original.write_text(text)  # and put back before resume
    resumed = project.resume(run_id, "alice")
    assert resumed.exit_code == 3  # nothing was approved
    assert "switch" not in project.journal
    (refused,) = project.events("approval_refused", run_id)
    assert refused["data"]["claimed_actor"] == "alice" and "drift" in refused["data"]["reason"]


def test_a_changed_runbook_is_refused_on_resume_in_every_env(project: Project) -> None:
    for env in ("prod", "stage"):
        run_id = project.start(env=env)
        path = project.root / "deploy.py"
        saved = path.read_text()
        path.write_text(saved + "\n# edited\n")
        done = project.resume(run_id, "bob")
        assert done.exit_code == 2 and "changed since the run started" in done.stderr
        refused = project.events("approval_refused", run_id)
        assert refused and "drift" in refused[-1]["data"]["reason"]
        path.write_text(saved)


def test_force_is_refused_by_the_runs_env_not_the_shells(project: Project) -> None:
    """The shell's default env is dev (allow_force); the run is prod (strict): refused."""
    run_id = project.start(env="prod")
    path = project.root / "deploy.py"
    path.write_text(path.read_text() + "\n# swapped code\n")
    done = project.resume(run_id, "bob", "--force")
    assert done.exit_code == 2
    assert "--force is refused in env 'prod'" in done.stderr


def _approved_then_drifted(project: Project, run_id: str) -> list[dict[str, Any]]:
    """Approve, change the probe's value from 3 to 7, resume: the gate asks again and switch
    does not run. The run's approval requests."""
    assert project.invoke("approve", run_id, actor="bob").exit_code == 0
    project.set_replicas(7)
    done = project.resume(run_id, "bob")
    assert done.exit_code == 3, done.output
    assert "switch" not in project.journal
    asked = project.events("approval_requested", run_id)
    assert len(asked) == 2
    return asked


def test_a_changed_probe_pauses_the_gate_again_naming_it(project: Project) -> None:
    run_id = project.start(env="stage")
    asked = _approved_then_drifted(project, run_id)
    reason = asked[1]["data"]["reason"]
    assert "probe replicas: approved 3, now 7" in reason
    assert asked[1]["data"]["plan_hash"] != asked[0]["data"]["plan_hash"]
    shown = project.invoke("show", run_id)
    assert "probe replicas = 7" in shown.stdout
    assert f"next: runbook approve {run_id} --step switch" in shown.stdout
    # bob's approval was for the old plan: bob may approve the new one.
    assert project.invoke("approve", run_id, actor="bob").exit_code == 0
    finished = project.resume(run_id, "bob")
    assert finished.exit_code == 0, finished.output
    assert json.loads(finished.stdout)["steps"]["switch"]["output"] == 7


def test_an_unchanged_probe_is_run_again_and_the_approval_counts(project: Project) -> None:
    run_id = project.start(env="stage")
    assert project.invoke("approve", run_id, actor="bob").exit_code == 0
    done = project.resume(run_id, "bob")
    assert done.exit_code == 0, done.output
    started = [e["step"] for e in project.events("step_started", run_id)]
    assert started.count("replicas") == 2  # re-run on resume, before the gate
    assert started.count("prepare") == 1


def test_show_prints_the_plan_and_its_hash(project: Project) -> None:
    run_id = project.start()
    (asked,) = project.events("approval_requested", run_id)
    shown = project.invoke("show", run_id)
    assert shown.exit_code == 0
    assert f"plan sha256 {asked['data']['plan_hash']}" in shown.stdout
    assert "probe replicas = 3" in shown.stdout and "env prod" in shown.stdout
    assert f"next: runbook approve {run_id} --step switch --sign KEY" in shown.stdout
    doc = json.loads(project.invoke("show", run_id, "--json").stdout)
    assert doc["gates"]["switch"]["plan"]["probes"] == {"replicas": 3}
    assert doc["gates"]["switch"]["plan_hash"] == asked["data"]["plan_hash"]


def test_an_approval_counts_only_while_its_approver_still_may_approve(project: Project) -> None:
    """Rules as used: bob approved, then the env's approvers no longer name him."""
    run_id = project.start()
    assert project.approve(run_id, "bob").exit_code == 0
    config = project.root / "runbook.toml"
    config.write_text(config.read_text().replace('["alice", "bob", "carol"]', '["alice", "carol"]'))
    done = project.resume(run_id, "carol")
    assert done.exit_code == 3, done.output
    assert "switch" not in project.journal
    (refused,) = project.events("approval_refused", run_id)
    assert refused["actor"] == "runbook" and refused["data"]["claimed_actor"] == "bob"
    assert "does not count" in refused["data"]["reason"]
    assert "may not approve" in refused["data"]["reason"]
    assert project.approve(run_id, "carol").exit_code == 0
    assert project.resume(run_id, "carol").exit_code == 0


# switch reads the probe only through sized.
INDIRECT = (
    RUNBOOK[: RUNBOOK.index("@step(approval=GATE)")]
    + """@step
def sized(replicas):
    return replicas


@step(approval=GATE)
def switch(prepare, sized):
    _log("switch")
    return sized
"""
)


def test_a_probe_reached_through_another_step_is_checked_for_drift(project: Project) -> None:
    """switch depends on sized, sized on the probe replicas: replicas is in switch's plan,
    so a changed replicas pauses switch again, as when switch reads it directly."""
    project.write(source=INDIRECT)
    run_id = project.start(env="stage")
    (asked,) = project.events("approval_requested", run_id)
    assert asked["data"]["plan"]["probes"] == {"replicas": 3}
    asked = _approved_then_drifted(project, run_id)
    assert "probe replicas: approved 3, now 7" in asked[1]["data"]["reason"]
    assert asked[1]["data"]["plan_hash"] != asked[0]["data"]["plan_hash"]


def test_a_probe_that_fails_when_run_again_does_not_keep_its_approved_value(
    project: Project,
) -> None:
    """An optional probe behind another step fails on resume: the gate's plan holds no value
    for it now, not the one approved, so the gate asks again instead of acting."""
    project.write(source=INDIRECT.replace("@probe\n", "@probe(required=False)\n"))
    run_id = project.start(env="stage")
    assert project.invoke("approve", run_id, actor="bob").exit_code == 0
    (project.root / "replicas.txt").write_text("unreadable")
    done = project.resume(run_id, "bob")
    assert done.exit_code == 3, done.output
    assert "switch" not in project.journal
    asked = project.events("approval_requested", run_id)
    assert len(asked) == 2
    assert "probe replicas: approved 3, now null" in asked[1]["data"]["reason"]
