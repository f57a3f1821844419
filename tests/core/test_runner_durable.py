"""Durable runs through the Python API: approval gates, four eyes, deny, cancel, protection levels,
crash recovery and the checks that keep ``resume`` from running the wrong thing.

Every "process" is a fresh ``Runner`` sharing one ``memory://<name>`` store, and the runbook is
re-imported on every resume, so what a step did is counted in a journal file, not in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from runbook import Runner, load
from runbook.audit.pipeline import HOST
from runbook.errors import ApprovalError, RunNotFound, UsageError
from runbook.store.base import RunRecord, StepRecord
from runbook.store.memory import MemoryStore

GATED = """
    from pathlib import Path
    from runbook import Approval, rollback, step

    JOURNAL = Path(__file__).with_name("journal.txt")


    def note(text):
        with JOURNAL.open("a") as f:
            f.write(text + "\\n")


    @step(reversible=True)
    def prepare():
        note("prepare")
        return {"slot": "green"}


    @rollback(prepare)
    def unprepare(prepare):
        note("undo prepare " + prepare["slot"])


    @step(approval=GATE)
    def switch(prepare):
        note("switch")
        return "switched"


    @step
    def verify(switch):
        note("verify")
"""


class Durable:
    """One gated runbook in ``tmp_path`` and Runners ("processes") that share a store."""

    def __init__(self, tmp_path: Path, store_url: str, write_runbook: Any) -> None:
        self.tmp_path = tmp_path
        self.store_url = store_url
        self.locks_url = f"memory://core-locks-{uuid.uuid4().hex}"
        self.write_runbook = write_runbook
        self.path: Path | None = None

    def write(self, gate: str = "True", source: str = GATED) -> Path:
        self.path = self.write_runbook(source.replace("GATE", gate))
        return self.path

    def runner(self, actor: str = "alice", **kwargs: Any) -> Runner:
        kwargs.setdefault("store", self.store_url)
        kwargs.setdefault("locks", self.locks_url)
        return Runner(actor=actor, seed=0, **kwargs)

    def start(self, **kwargs: Any):
        return self.runner(**kwargs).run(self.path)

    @property
    def journal(self) -> list[str]:
        path = self.tmp_path / "journal.txt"
        return path.read_text().splitlines() if path.exists() else []

    @property
    def store(self) -> MemoryStore:
        return MemoryStore.open(self.store_url)


@pytest.fixture
def d(tmp_path, store_url, write_runbook) -> Durable:
    return Durable(tmp_path, store_url, write_runbook)


# -- approval gates -----------------------------------------------------------------------------


def test_gate_pauses_with_exit_3_and_tells_how_to_approve(d):
    d.write()
    result = d.start()
    assert result.status == "paused" and result.exit_code == 3
    assert result.steps["switch"].status == "awaiting_approval"
    assert result.steps["verify"].status == "pending"
    assert d.journal == ["prepare"]
    requested = [e for e in result.audit if e.kind == "approval_requested"]
    assert len(requested) == 1 and requested[0].step == "switch"
    assert requested[0].data["command"] == f"runbook approve {result.run_id} --step switch"
    assert [e.kind for e in result.audit][-2:] == ["run_paused", "run_finished"]
    assert d.store.get_run(result.run_id).status == "paused"


def test_approve_then_resume_in_another_process_does_not_rerun_finished_steps(d):
    d.write()
    paused = d.start()
    decision = d.runner("bob").approve(paused.run_id, actor="bob", comment="LGTM")
    assert decision == {
        "run_id": paused.run_id,
        "step": "switch",
        "actor": "bob",
        "approvers": ["bob"],
        "needed": 1,
        "satisfied": True,
        "missing": "nothing",
        "signed": False,
    }
    approvals = d.store.approvals(paused.run_id, "switch")
    assert [(a.actor, a.decision, a.comment, a.auto) for a in approvals] == [
        ("bob", "granted", "LGTM", False)
    ]

    result = d.runner("bob").resume(paused.run_id)
    assert result.status == "succeeded" and result.run_id == paused.run_id
    assert d.journal == ["prepare", "switch", "verify"]  # prepare ran once
    assert result.steps["prepare"].output == {"slot": "green"}  # restored from the store
    assert result.steps["switch"].output == "switched"
    assert result.actor == "alice"  # the run's actor stays who started it
    assert result.audit[0].kind == "run_resumed"
    assert d.store.get_run(paused.run_id).status == "succeeded"


def test_approve_names_the_step_when_several_wait_and_refuses_a_step_not_waiting(d):
    d.write()
    paused = d.start()
    with pytest.raises(ApprovalError, match=r"'prepare' .* is not awaiting approval .*switch"):
        d.runner("bob").approve(paused.run_id, step="prepare", actor="bob")


def test_four_eyes(d):
    d.write("Approval(min=2, allow_self=False)")
    paused = d.start(actor="alice")
    with pytest.raises(ApprovalError, match=r"alice started run .* cannot approve 'switch'"):
        d.runner("alice").approve(paused.run_id, actor="alice")

    first = d.runner("bob").approve(paused.run_id, actor="bob")
    assert first["satisfied"] is False and first["needed"] == 2
    still = d.runner("bob").resume(paused.run_id)
    assert still.status == "paused" and d.journal == ["prepare"]

    with pytest.raises(ApprovalError, match="bob already approved 'switch'"):
        d.runner("bob").approve(paused.run_id, actor="bob")

    second = d.runner("carol").approve(paused.run_id, actor="carol")
    assert second["satisfied"] is True and second["approvers"] == ["bob", "carol"]
    result = d.runner("carol").resume(paused.run_id)
    assert result.status == "succeeded"
    assert d.journal == ["prepare", "switch", "verify"]


def test_approvers_list_refuses_anyone_else(d):
    d.write('Approval(approvers=["carol", "dan"])')
    paused = d.start()
    with pytest.raises(ApprovalError, match="bob may not approve 'switch'; approvers: carol, dan"):
        d.runner("bob").approve(paused.run_id, actor="bob")
    assert d.store.approvals(paused.run_id) == []
    d.runner("dan").approve(paused.run_id, actor="dan")
    assert d.runner("dan").resume(paused.run_id).status == "succeeded"


def test_env_approvers_apply_when_the_gate_names_none(d):
    d.write()
    paused = d.start(approvers=["erin"])
    with pytest.raises(ApprovalError, match="bob may not approve 'switch'; approvers: erin"):
        d.runner("bob", approvers=["erin"]).approve(paused.run_id, actor="bob")
    d.runner("erin", approvers=["erin"]).approve(paused.run_id, actor="erin")
    assert d.runner("erin", approvers=["erin"]).resume(paused.run_id).status == "succeeded"


def test_approving_a_run_that_is_not_paused_is_refused(d):
    d.write()
    paused = d.start()
    d.runner("bob").approve(paused.run_id, actor="bob")
    d.runner("bob").resume(paused.run_id)
    with pytest.raises(ApprovalError, match="is succeeded, not paused"):
        d.runner("bob").approve(paused.run_id, actor="carol")


def test_deny_never_runs_the_gate_and_rolls_back(d):
    d.write()
    paused = d.start()
    result = d.runner("bob").deny(paused.run_id, actor="bob", reason="not during the sale")
    assert result.status == "rolled_back" and result.exit_code == 1
    assert d.journal == ["prepare", "undo prepare green"]
    assert result.steps["switch"].status == "denied"
    assert result.steps["verify"].status == "pending"
    assert result.steps["prepare"].status == "rolled_back"
    assert result.error == "switch: approval denied"
    denied = d.store.approvals(paused.run_id, "switch")
    assert [(a.actor, a.decision, a.comment) for a in denied] == [
        ("bob", "denied", "not during the sale")
    ]
    with pytest.raises(UsageError, match="has ended"):
        d.runner().resume(paused.run_id)


def test_cancel_a_paused_run_rolls_back(d):
    d.write()
    paused = d.start()
    result = d.runner("bob").cancel(paused.run_id, actor="bob")
    assert result.status == "cancelled" and result.exit_code == 130
    assert d.journal == ["prepare", "undo prepare green"]
    assert result.steps["switch"].status == "cancelled"
    assert "run_cancelled" in [e.kind for e in result.audit]
    assert d.store.get_run(paused.run_id).status == "cancelled"


# -- protection levels --------------------------------------------------------------------------


def test_protection_none_auto_grants_and_records_it(d):
    d.write("Approval(min=2, allow_self=False)")
    result = d.start(protection="none")
    assert result.status == "succeeded"
    assert d.journal == ["prepare", "switch", "verify"]
    [approval] = d.store.approvals(result.run_id, "switch")
    assert approval.auto is True and approval.decision == "granted"
    granted = [e for e in result.audit if e.kind == "approval_granted"]
    assert granted[0].data["auto"] is True and "protection none" in granted[0].data["comment"]


def test_yes_grants_as_the_actor_in_standard(d):
    d.write()
    result = d.start(yes=True)
    assert result.status == "succeeded"
    [approval] = d.store.approvals(result.run_id, "switch")
    assert (approval.actor, approval.auto, approval.comment) == (
        "alice",
        False,
        "approved with --yes",
    )


def test_yes_cannot_satisfy_four_eyes(d):
    d.write("Approval(min=2, allow_self=False)")
    assert d.start(yes=True).status == "paused"


def test_yes_is_refused_in_strict(d):
    d.write()
    with pytest.raises(UsageError, match="--yes is refused in env 'dev' \\(protection strict\\)"):
        d.start(yes=True, protection="strict")
    assert d.journal == []


def test_strict_refuses_reversible_steps_without_rollback(d, write_runbook):
    path = write_runbook(
        """
        from runbook import rollback, step

        @step(reversible=True)
        def covered():
            pass

        @rollback(covered)
        def undo():
            pass

        @step(reversible=True)
        def naked():
            pass
    """,
        name="strict_rb",
    )
    with pytest.raises(UsageError, match=r"requires a rollback .*missing for: naked$"):
        d.runner(protection="strict").run(path)
    assert d.runner(protection="standard").run(path).status == "succeeded"


# -- crash recovery -------------------------------------------------------------------------------

CRASHY = """
    from pathlib import Path
    from runbook import step

    JOURNAL = Path(__file__).with_name("journal.txt")


    def note(text):
        with JOURNAL.open("a") as f:
            f.write(text + "\\n")


    @step
    def backup():
        note("backup")
        return "backup-1"


    @step(idempotent=IDEMPOTENT)
    def migrate(backup):
        note("migrate")
        return "v2"


    @step
    def announce(migrate):
        note("announce")
"""


@pytest.fixture
def crashed(d):
    """A run whose process died while ``migrate`` was running, as the store shows it."""

    def make(idempotent: bool, pid: int | None = None) -> str:
        path = d.write(source=CRASHY.replace("IDEMPOTENT", str(idempotent)))
        rb = load(path)
        run_id = f"crash-{uuid.uuid4().hex[:8]}"
        if pid is None:
            proc = subprocess.Popen([sys.executable, "-c", "pass"])
            proc.wait()
            pid = proc.pid
        d.store.create_run(
            RunRecord(
                run_id=run_id,
                runbook_path=str(path),
                runbook_sha256=rb.sha256,
                env="dev",
                actor="alice",
                status="running",
                host=HOST,
                pid=pid,
            )
        )
        d.store.save_step(
            StepRecord(
                run_id, "backup", "succeeded", output="backup-1", attempts=1, completed_seq=1
            )
        )
        d.store.save_step(StepRecord(run_id, "migrate", "running", attempts=1))
        return run_id

    return make


def test_resume_reruns_an_interrupted_idempotent_step(d, crashed):
    run_id = crashed(idempotent=True)
    result = d.runner("bob").resume(run_id)
    assert result.status == "succeeded"
    assert d.journal == ["migrate", "announce"]  # backup finished before the crash: not re-run
    assert result.steps["backup"].output == "backup-1"
    assert d.store.interrupt_decisions(run_id) == []  # nothing to decide


def test_resume_refuses_a_non_idempotent_interrupted_step(d, crashed):
    run_id = crashed(idempotent=False)
    with pytest.raises(UsageError) as info:
        d.runner("bob").resume(run_id)
    message = str(info.value)
    assert "migrate" in message and "not idempotent" in message
    assert "--retry-interrupted" in message and "--skip-interrupted" in message
    assert d.journal == []
    assert d.store.get_run(run_id).status == "running"


def test_retry_interrupted_reruns_it_and_records_who_decided(d, crashed):
    run_id = crashed(idempotent=False)
    result = d.runner("bob").resume(run_id, retry_interrupted=True)
    assert result.status == "succeeded"
    assert d.journal == ["migrate", "announce"]
    [decision] = d.store.interrupt_decisions(run_id)
    assert (decision.step, decision.choice, decision.actor) == ("migrate", "retry", "bob")


def test_skip_interrupted_treats_it_as_not_run_and_records_who_decided(d, crashed):
    run_id = crashed(idempotent=False)
    result = d.runner("bob").resume(run_id, skip_interrupted=True)
    assert d.journal == []  # neither migrate nor its dependent ran
    assert result.steps["migrate"].status == "skipped"
    assert result.steps["migrate"].reason == "skipped (operator)"
    assert result.steps["announce"].status == "skipped"
    assert result.status == "succeeded"
    [decision] = d.store.interrupt_decisions(run_id)
    assert (decision.step, decision.choice, decision.actor) == ("migrate", "skip", "bob")


def test_both_interrupt_flags_at_once_is_a_usage_error(d, crashed):
    run_id = crashed(idempotent=False)
    with pytest.raises(UsageError, match="choose one"):
        d.runner().resume(run_id, retry_interrupted=True, skip_interrupted=True)


def test_resume_refuses_a_run_whose_process_is_alive(d, crashed):
    run_id = crashed(idempotent=True, pid=os.getppid())
    with pytest.raises(UsageError, match=f"run {run_id} is still running"):
        d.runner().resume(run_id)


def test_resume_of_a_finished_run_is_refused(d):
    d.write("False")
    result = d.start()
    assert result.status == "succeeded"
    with pytest.raises(UsageError, match=r"has ended \(succeeded\); nothing to resume"):
        d.runner().resume(result.run_id)


def test_resume_after_the_runbook_changed_needs_force(d):
    path = d.write()
    paused = d.start()
    d.runner("bob").approve(paused.run_id, actor="bob")
    path.write_text(path.read_text() + "\n# edited after approval\n")
    with pytest.raises(UsageError, match="changed since the run started"):
        d.runner("bob").resume(paused.run_id)
    with pytest.raises(UsageError, match="--force is refused"):
        d.runner("bob", protection="strict").resume(paused.run_id, force=True)
    again = d.runner("bob").resume(paused.run_id, force=True)
    # The approval was for the old code: the gate asks again, naming the change.
    assert again.status == "paused" and "switch" not in d.journal
    (resumed,) = [e for e in again.audit if e.kind == "run_resumed"]
    assert resumed.data["forced"]["approved_sha256"] == paused.audit[0].runbook["sha256"]
    (asked,) = [e for e in again.audit if e.kind == "approval_requested"]
    assert "runbook source changed" in asked.data["reason"]
    d.runner("bob").approve(paused.run_id, actor="bob")
    assert d.runner("bob").resume(paused.run_id).status == "succeeded"


def test_resume_of_an_unknown_run(d):
    with pytest.raises(RunNotFound, match="no run 'nope'"):
        d.runner().resume("nope")
    with pytest.raises(RunNotFound):
        d.runner().approve("nope", actor="bob")


def test_cancel_records_who_cancelled(d):
    d.write()
    paused = d.start(actor="alice")
    result = d.runner("bob").cancel(paused.run_id, actor="bob")
    cancelled = [e for e in result.audit if e.kind == "run_cancelled"]
    assert cancelled and (cancelled[0].actor == "bob" or cancelled[0].data.get("actor") == "bob")


SECRET_OUTPUT = """
    from pathlib import Path
    from runbook import param, step

    token = param("token", secret=True, env="CORE_TEST_REGISTRY_TOKEN")
    SENT = Path(__file__).with_name("sent.txt")


    @step
    def login(params):
        return {"header": "Bearer " + params.token}


    @step(approval=True)
    def push(login):
        SENT.write_text(login["header"])
"""


def test_resume_refuses_to_feed_a_masked_secret_to_a_step(d, monkeypatch):
    """The secret in login's output was never stored; a non-idempotent login cannot be redone."""
    monkeypatch.setenv("CORE_TEST_REGISTRY_TOKEN", "reg-tok-5b8e0c1d")
    d.write(source=SECRET_OUTPUT)
    paused = d.start()
    d.runner("bob").approve(paused.run_id, actor="bob")
    with pytest.raises(UsageError, match=r"login \(needed by push\).*idempotent=True"):
        d.runner("bob").resume(paused.run_id)
    assert not (d.tmp_path / "sent.txt").exists()
    stored = d.store.get_steps(paused.run_id)["login"].output
    assert "reg-tok-5b8e0c1d" not in json.dumps(stored)


def test_resume_redoes_an_idempotent_step_whose_output_held_a_secret(d, monkeypatch):
    secret = "reg-tok-5b8e0c1d"
    monkeypatch.setenv("CORE_TEST_REGISTRY_TOKEN", secret)
    d.write(
        source=SECRET_OUTPUT.replace(
            "    @step\n    def login", "    @step(idempotent=True)\n    def login"
        )
    )
    paused = d.start()
    d.runner("bob").approve(paused.run_id, actor="bob")
    result = d.runner("bob").resume(paused.run_id)
    assert result.status == "succeeded", (result.error, result.steps)
    assert (d.tmp_path / "sent.txt").read_text() == f"Bearer {secret}", result.steps


def test_resume_from_a_laxer_runner_keeps_the_runs_own_env_rules(d):
    d.write()
    paused = d.start(env="prod")
    result = d.runner("bob", env="dev", protection="none").resume(paused.run_id)
    assert result.status == "paused", "a prod gate must not be auto-granted by a dev shell"
    assert d.journal == ["prepare"]
    assert d.store.approvals(paused.run_id) == []


def test_a_secret_output_no_pending_step_needs_is_not_redone(d, monkeypatch):
    """login's output held a secret, but the gate does not use it: resume goes on without it."""
    monkeypatch.setenv("CORE_TEST_REGISTRY_TOKEN", "reg-tok-5b8e0c1d")
    d.write(
        source=SECRET_OUTPUT.replace("def push(login):", "def push():").replace(
            'SENT.write_text(login["header"])', 'SENT.write_text("pushed")'
        )
    )
    paused = d.start()
    d.runner("bob").approve(paused.run_id, actor="bob")
    result = d.runner("bob").resume(paused.run_id)
    assert result.status == "succeeded", result.error
    assert (d.tmp_path / "sent.txt").read_text() == "pushed"


TWO_GATES = """
    from runbook import step


    @step(approval=True)
    def one():
        return 1


    @step(approval=True)
    def two():
        return 2
"""


def test_approve_without_step_names_the_gates_or_says_there_is_none(d):
    d.write(source=TWO_GATES)
    paused = d.start()
    with pytest.raises(ApprovalError, match=r"several steps await approval \(one, two\)"):
        d.runner("bob").approve(paused.run_id, actor="bob")
    d.runner("bob").approve(paused.run_id, actor="bob", step="one")
    d.runner("bob").approve(paused.run_id, actor="bob", step="two")
    assert d.runner("bob").resume(paused.run_id).status == "succeeded"


def test_a_gate_removed_from_the_runbook_is_not_re_checked_on_a_forced_resume(d):
    """--force after the approved gate was renamed: the old approval covers nothing, the renamed
    gate asks again."""
    d.write()
    paused = d.start()
    d.runner("bob").approve(paused.run_id, actor="bob")
    assert d.path is not None
    source = d.path.read_text()
    d.path.write_text(
        source.replace("def switch(prepare):", "def switched(prepare):").replace(
            "def verify(switch):", "def verify(switched):"
        )
    )
    result = d.runner("bob").resume(paused.run_id, force=True)
    assert result.status == "paused", result.error
    assert result.steps["switched"].status == "awaiting_approval"
    assert d.journal == ["prepare"]


def test_resume_of_a_crashed_run_refused_by_its_run_lock_changes_nothing(d, crashed):
    """Another run holds the lock: the crashed run stays as the store had it (running, to be
    resumed later), and its interrupted step was not touched."""
    from runbook.errors import LockHeld
    from runbook.locks.memory import MemoryLocks

    run_id = crashed(idempotent=True)
    assert d.path is not None
    d.path.write_text('lock = "web-{env}"\n' + d.path.read_text())
    MemoryLocks.open(d.locks_url).acquire("web-dev", "run-of-dave", actor="dave", lease=600)
    with pytest.raises(LockHeld, match="run-of-dave"):
        d.runner("bob").resume(run_id, force=True)
    assert d.store.get_run(run_id).status == "running"
    assert d.store.get_steps(run_id)["migrate"].status == "running"
    assert d.journal == []


def test_deny_of_an_expired_gate_is_refused_and_the_expiry_decides(d):
    """The gate's timeout passed before the denial: the expiry (on_timeout) already decided."""
    from datetime import UTC, datetime, timedelta

    from runbook.errors import RunbookError
    from runbook.testing.fakes import FakeClock

    d.write('Approval(timeout="4h", on_timeout="deny")')
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=5), freeze=False)
    paused = d.start(clock=clock)
    assert paused.status == "paused"
    with pytest.raises(RunbookError, match="expired"):
        d.runner("bob").deny(paused.run_id, reason="no")
    assert d.store.get_run(paused.run_id).status in ("failed", "rolled_back")
    assert "switch" not in d.journal


def test_approve_of_a_paused_run_whose_gate_is_no_longer_waiting_is_refused(d):
    d.write()
    paused = d.start()
    gate = d.store.get_steps(paused.run_id)["switch"]
    d.store.save_step(StepRecord(paused.run_id, "switch", "pending", attempts=gate.attempts))
    with pytest.raises(ApprovalError, match="has no step awaiting approval"):
        d.runner("bob").approve(paused.run_id, actor="bob")


def test_the_refusal_names_one_interrupted_step_in_the_singular_with_its_commands() -> None:
    from runbook.recovery import undecided_message

    one = undecided_message("r1", ["migrate"], settling=False)
    assert one.startswith("run r1: migrate was running when the process died and is not idempotent")
    assert "runbook resume r1 --retry-interrupted (run it again)" in one
    assert "runbook resume r1 --skip-interrupted (treat it as not run)" in one
    two = undecided_message("r1", ["migrate", "the rollback of stage"], settling=True)
    assert "migrate, the rollback of stage were running" in two and "are not idempotent" in two
    assert "(run them again)" in two and "(leave them undone)" in two
