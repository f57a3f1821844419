"""Failure-recovery paths the other engine tests do not reach: an audit sink or run store that
refuses a write at the start of a run or of its rollback, a denial whose process died before it
could settle the run, an executor whose rollback raises ``SystemExit``, rollback arguments with
defaults, a resource whose teardown fails, and the durable operations' refusals."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runbook import Runner, load
from runbook import recovery as recovery_module
from runbook.audit.memory import MemorySink
from runbook.errors import (
    AuditError,
    ConfigError,
    ParamError,
    PluginError,
    RunbookError,
    UsageError,
)
from runbook.executors.local import LocalExecutor
from runbook.store.base import ApprovalRecord
from runbook.store.memory import MemoryStore

STAGED = """
from runbook import rollback, step

DONE = []

@step(reversible=True)
def stage():
    DONE.append("stage")
    return "v1"

@rollback(stage)
def unstage(stage, note="default note"):
    DONE.append(f"unstage {stage} {note}")

@step
def switch(stage):
    raise RuntimeError("switch broke")
"""

GATED = """
from runbook import rollback, step

DONE = []

@step(reversible=True)
def stage():
    DONE.append("stage")
    return "v1"

@rollback(stage)
def unstage(stage):
    DONE.append("unstage")

@step(approval=True)
def switch(stage):
    DONE.append("switch")
    return 2
"""


def _runner(store: Any = None, **kw: Any) -> Runner:
    kw.setdefault("actor", "alice")
    kw.setdefault("locks", f"memory://recovery-{uuid.uuid4().hex}")
    return Runner(store=store or f"memory://recovery-{uuid.uuid4().hex}", **kw)


class RefusingSink(MemorySink):
    """An audit sink that refuses one kind of event (a full disk, a permission change)."""

    def __init__(self, refuse: str) -> None:
        super().__init__()
        self.refuse = refuse

    def append(self, event: Any) -> Any:
        if event.kind == self.refuse:
            raise AuditError(f"audit sink refused {event.kind}: disk full")
        return super().append(event)


def test_an_audit_sink_refusing_run_started_stops_the_run_before_any_step(write_runbook):
    rb = load(write_runbook(STAGED))
    result = _runner(audit=[RefusingSink("run_started")]).run(rb)
    assert result.status == "failed"
    assert "refused run_started" in (result.error or "")
    assert rb.module.DONE == []  # nothing ran unrecorded


class RollbackRefusingStore(MemoryStore):
    """Refuses to record that a run has begun to roll back."""

    def __init__(self) -> None:
        super().__init__(f"memory://refusing-{uuid.uuid4().hex}")

    def update_run(self, run_id: str, **changes: Any) -> None:
        if "rollback" in (changes.get("options") or {}):
            raise OSError("disk full")
        super().update_run(run_id, **changes)


def test_a_store_refusing_the_rollback_cause_still_rolls_back(write_runbook):
    """The cause cannot be stored: the run says so, and undoes what it did anyway."""
    rb = load(write_runbook(STAGED))
    result = _runner(RollbackRefusingStore()).run(rb)
    assert rb.module.DONE == ["stage", "unstage v1 default note"]  # a rollback's own default
    assert result.steps["stage"].status == "rolled_back"
    assert result.steps["switch"].status == "failed"
    assert result.exit_code != 0
    assert "run store failed: OSError: disk full" in (result.error or "") or any(
        "disk full" in str(e.data) for e in result.audit
    )


def test_a_denial_whose_process_died_before_settling_is_honoured_by_resume(write_runbook):
    """`deny` stored its decision and died: a later `resume` must not run the gate, it fails the
    run and rolls back."""
    rb = load(write_runbook(GATED))
    store = f"memory://recovery-{uuid.uuid4().hex}"
    paused = _runner(store).run(rb)
    assert paused.status == "paused"
    runner = _runner(store, actor="bob")
    assert runner.store is not None
    runner.store.add_approval(
        ApprovalRecord(paused.run_id, "switch", "bob", "denied", "no", datetime.now(UTC))
    )
    result = runner.resume(paused.run_id)
    assert result.status == "rolled_back", result.error
    assert "approval for 'switch' was denied" in (result.error or "")
    assert result.steps["stage"].status == "rolled_back"  # resume loads its own module
    assert result.steps["switch"].status == "denied"


class ExitingRollbacks(LocalExecutor):
    """A custom executor whose rollback attempt raises SystemExit (the process is leaving)."""

    async def run(self, attempt: Any) -> Any:
        if attempt.rollback:
            raise SystemExit(3)
        return await super().run(attempt)


def test_a_process_exit_during_a_rollback_is_not_recorded_as_a_rollback_outcome(write_runbook):
    """SystemExit from the executor is the process leaving, not the undo failing: it goes
    through, and the rollback stays 'running' in the store for `resume` to redo."""
    rb = load(write_runbook(STAGED))
    store = MemoryStore(f"memory://recovery-{uuid.uuid4().hex}")
    runner = _runner(store, executor=ExitingRollbacks(clock=Runner().clock))
    with pytest.raises(SystemExit):
        runner.run(rb)
    (run,) = store.list_runs()
    steps = store.get_steps(run.run_id)
    assert steps["stage"].rollback == "running"


def test_a_resource_teardown_that_fails_is_logged_not_raised(write_runbook, caplog):
    source = """
from runbook import resource, step

@resource
def conn():
    yield "connection"
    raise RuntimeError("close failed")

@step
def use(conn):
    return conn
"""
    rb = load(write_runbook(source))
    with caplog.at_level(logging.WARNING, logger="runbook"):
        result = _runner().run(rb)
    assert result.status == "succeeded", result.error
    assert result.steps["use"].output == "connection"
    assert any("close failed" in r.getMessage() for r in caplog.records)


# -- the durable operations' refusals --------------------------------------------------------


def test_a_runner_without_a_store_cannot_resume(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no run store"):
        Runner(store=None, actor="alice").resume("r1")


def test_resume_refuses_when_the_runbook_file_is_gone(write_runbook):
    path = write_runbook(GATED)
    store = f"memory://recovery-{uuid.uuid4().hex}"
    paused = _runner(store).run(load(path))
    path.unlink()
    with pytest.raises(UsageError, match="no longer exists"):
        _runner(store).resume(paused.run_id)


def test_cancel_of_a_run_whose_runbook_is_gone_says_which_file_to_put_back(write_runbook):
    path = write_runbook(GATED)
    store = f"memory://recovery-{uuid.uuid4().hex}"
    paused = _runner(store).run(load(path))
    sha = _runner(store).store.get_run(paused.run_id).runbook_sha256
    path.unlink()
    with pytest.raises(UsageError) as refused:
        _runner(store).cancel(paused.run_id)
    message = str(refused.value)
    assert f"run {paused.run_id}: its runbook {path} no longer exists" in message
    assert f"put back the file the run started with (sha256 {sha[:12]})" in message
    assert _runner(store).store.get_run(paused.run_id).status == "paused"  # nothing changed


def test_deny_of_a_run_that_is_not_paused_is_refused(write_runbook):
    store = f"memory://recovery-{uuid.uuid4().hex}"
    done = _runner(store).run(load(write_runbook(STAGED)))
    with pytest.raises(RunbookError, match="not paused"):
        _runner(store, actor="bob").deny(done.run_id, reason="too late")


def test_a_pid_owned_by_another_user_counts_as_alive(monkeypatch):
    def refused(pid: int, sig: int) -> None:
        raise PermissionError(pid)

    monkeypatch.setattr(os, "kill", refused)
    assert recovery_module._pid_alive(12345)


def test_a_stored_runs_env_without_config_is_never_weaker_than_standard():
    weak = Runner(store=None, env="dev", protection="none")
    assert weak.envs.settings("prod")[0].level == "standard"
    strict = Runner(store=None, env="dev", protection="strict")
    assert strict.envs.settings("prod")[0].level == "strict"


def test_an_interrupt_while_no_step_runs_cancels_cleanly(write_runbook):
    """Cancelled between steps (no task running): nothing to wait for, the run ends cancelled."""
    rb = load(write_runbook(GATED))

    async def main() -> Any:
        task = asyncio.ensure_future(_runner().arun(rb))
        await asyncio.sleep(0)
        task.cancel()
        return await task

    result = asyncio.run(main())
    assert result.status in ("cancelled", "rolled_back", "failed")


class HolderUnknown:
    """A lock provider that refuses the lock but cannot say who holds it (a provider whose
    holder row vanished between the two calls, every time)."""

    def __init__(self) -> None:
        from runbook.locks.memory import MemoryLocks

        self.inner = MemoryLocks.open(f"memory://unknown-{uuid.uuid4().hex}")

    def acquire(self, name: str, owner: str, **kw: Any) -> Any:
        return None if name == "web-prod" else self.inner.acquire(name, owner, **kw)

    def __getattr__(self, name: str) -> Any:
        if name == "holder":
            return lambda lock: None
        return getattr(self.inner, name)


def test_waiting_for_a_lock_whose_holder_is_unknown_says_so_without_a_holder(
    write_runbook, fake_clock
):
    from runbook import hookimpl
    from runbook.errors import LockHeld

    messages: list[str] = []

    class Progress:
        @hookimpl
        def runbook_progress(self, message: str) -> None:
            messages.append(message)

    rb = load(
        write_runbook(
            'from runbook import step\nlock = "web-{env}"\n@step\ndef a():\n    return 1\n'
        )
    )
    runner = Runner(
        store=None,
        locks=HolderUnknown(),
        actor="bob",
        env="prod",
        lock_timeout=5,
        plugins=[Progress()],
        resources={"clock": fake_clock},
    )
    with pytest.raises(LockHeld, match="web-prod"):
        runner.run(rb)
    assert messages and messages[0] == "waiting for lock web-prod"


def test_runner_close_leaves_the_callers_providers_and_closes_its_metrics(tmp_path, monkeypatch):
    """Providers passed in as objects belong to the caller; the metrics target is the runner's;
    a provider without ``close`` is simply left."""
    from runbook.locks.memory import MemoryLocks

    store = MemoryStore(f"memory://close-{uuid.uuid4().hex}")
    locks = MemoryLocks.open(f"memory://close-{uuid.uuid4().hex}")
    closed: list[str] = []
    monkeypatch.setattr(store, "close", lambda: closed.append("store"), raising=False)
    monkeypatch.setattr(locks, "close", lambda: closed.append("locks"), raising=False)
    runner = Runner(
        store=store,
        locks=locks,
        audit=[f"jsonl://{tmp_path / 'audit.jsonl'}"],
        metrics=f"textfile://{tmp_path / 'metrics'}",
    )
    assert runner._metrics is not None
    monkeypatch.setattr(runner._metrics, "close", lambda: closed.append("metrics"), raising=False)
    sink = runner.sinks[0]
    monkeypatch.delattr(type(sink), "close", raising=False)
    runner.close()
    assert closed == ["metrics"]


def test_waiting_for_a_step_that_never_timed_out_is_immediate():
    executor = LocalExecutor(clock=Runner().clock)
    assert not executor.still_running("never-ran")
    assert asyncio.run(executor.wait_stopped("never-ran", 5.0))


def test_a_resume_refused_by_a_run_lock_leaves_the_run_paused(write_runbook):
    """The run let its lock go while paused; another run holds it when `resume` comes: nothing
    runs, and the run is still paused (resumable later), not failed."""
    from runbook.errors import LockHeld
    from runbook.locks.memory import MemoryLocks

    source = GATED.replace("DONE = []", 'DONE = []\nlock = "web-{env}"')
    rb = load(write_runbook(source))
    store, locks = f"memory://{uuid.uuid4().hex}", f"memory://{uuid.uuid4().hex}"
    kw: dict[str, Any] = {"locks": locks, "env": "prod", "keep_lock_when_paused": False}
    paused = _runner(store, **kw).run(rb)
    assert paused.status == "paused"
    MemoryLocks.open(locks).acquire("web-prod", "run-of-dave", actor="dave", lease=600)
    _runner(store, actor="bob", **kw).approve(paused.run_id, actor="bob")
    with pytest.raises(LockHeld, match="run-of-dave"):
        _runner(store, actor="bob", **kw).resume(paused.run_id)
    stored = MemoryStore.open(store)
    assert stored.get_run(paused.run_id).status == "paused"
    assert stored.get_steps(paused.run_id)["switch"].status == "awaiting_approval"


def test_a_run_without_a_store_still_reports_its_end():
    rb_source = "from runbook import step\n@step\ndef a(notify):\n    notify('hi')\n    return 1\n"
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rb.py"
        (Path(folder) / "pyproject.toml").touch()
        path.write_text(rb_source)
        sink = MemorySink()
        result = Runner(store=None, audit=[sink], actor="alice").run(path)
    assert result.status == "succeeded", result.error
    assert [e.kind for e in sink.events()][-1] == "run_finished"


def test_a_runner_without_a_router_says_how_to_configure_one():
    with pytest.raises(RunbookError, match="no router configured"):
        Runner(store=None, router=None).open_router()
    assert Runner(store=None, router="memory://").open_router() is not None


def test_a_bad_router_url_is_refused_when_the_runner_is_built():
    """The router is opened when a step first asks for it, mid-run: its URL is checked before
    (the provider's ``check``), so a typo stops the command before anything ran."""
    with pytest.raises(ConfigError, match=r"^router: file://: has no path"):
        Runner(store=None, router="file://")
    with pytest.raises(PluginError, match="no router plugin for nosuch://"):
        Runner(store=None, router="nosuch://x")


def test_an_unknown_durability_is_a_usage_error():
    with pytest.raises(UsageError, match="durability must be"):
        Runner(store=None, durability="eventually")


def test_an_interrupt_while_waiting_for_the_run_lock_ends_the_run_with_nothing_run(write_runbook):
    """Ctrl-C while the run waits for its lock (no step task exists yet): cancelled at once."""
    from runbook import hookimpl
    from runbook.locks.memory import MemoryLocks

    locks = f"memory://{uuid.uuid4().hex}"
    MemoryLocks.open(locks).acquire("web-prod", "run-of-dave", actor="dave", lease=600)
    source = GATED.replace("DONE = []", 'DONE = []\nlock = "web-{env}"')
    rb = load(write_runbook(source))

    async def main() -> Any:
        task: asyncio.Task[Any] | None = None

        class CancelWhenWaiting:
            @hookimpl
            def runbook_progress(self, message: str) -> None:
                if message.startswith("waiting for lock") and task is not None:
                    task.cancel()

        runner = _runner(locks=locks, env="prod", lock_timeout=60, plugins=[CancelWhenWaiting()])
        task = asyncio.ensure_future(runner.arun(rb))
        return await task

    result = asyncio.run(main())
    assert result.status == "cancelled"
    assert rb.module.DONE == []


LOCKED_AND_NOT = """
import asyncio
from runbook import step

STOPPED = []
LOST = asyncio.Event()

@step(lock="db")
async def locked():
    try:
        await asyncio.sleep(5)  # a bound: the lease is lost at once, which cancels this
    except asyncio.CancelledError:
        STOPPED.append("locked")
        LOST.set()
        raise

@step
async def free():
    await LOST.wait()  # running when the lease is lost, and not stopped by it
    return "free"
"""


def test_a_lost_lease_stops_only_the_steps_it_protected(write_runbook, stolen_leases):
    rb = load(write_runbook(LOCKED_AND_NOT))
    runner = _runner(locks=stolen_leases(f"memory://{uuid.uuid4().hex}"), lease=30)
    result = runner.run(rb)
    assert result.steps["locked"].status == "failed"
    assert rb.module.STOPPED == ["locked"]  # stopped at the loss, not failed after it returned
    assert result.steps["locked"].error == (
        "LeaseLost: lease on lock 'db' was taken over by run other-run"
    )
    assert result.steps["free"].status in ("succeeded", "cancelled")
    assert "LeaseLost" not in (result.steps["free"].error or "")
    assert rb.module.STOPPED == ["locked"]  # free was running at the loss, and was not stopped


def test_a_failing_audit_listener_or_hook_never_breaks_the_run(write_runbook, caplog):
    from runbook import hookimpl

    class Broken:
        @hookimpl
        def runbook_event(self, event: Any) -> None:
            raise RuntimeError("listener broke")

        @hookimpl
        def runbook_step_started(self, step: str) -> None:
            raise RuntimeError("hook broke")

    rb = load(write_runbook("from runbook import step\n@step\ndef a():\n    return 1\n"))
    with caplog.at_level(logging.ERROR, logger="runbook"):
        result = _runner(plugins=[Broken()]).run(rb)
    assert result.status == "succeeded"
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "audit listener failed" in text and "hook runbook_step_started failed" in text


GROUP = """
from pathlib import Path
from runbook import step
from runbook.groups import GroupStep, StepGroup
from runbook.markers import StepOptions

UNDONE = Path(__file__).with_name("undone.txt")


def shift():
    return {"weight": 5}


def unshift(output):
    UNDONE.write_text(repr(output))


def bake():
    raise RuntimeError("analysis failed")


release = StepGroup(
    strategy="handmade",
    service="web",
    steps=(
        GroupStep("shift-5", shift, StepOptions(reversible=True), rollback=unshift),
        GroupStep("bake-5", bake, after=("shift-5",)),
    ),
)
"""


def test_a_group_steps_rollback_receives_its_own_output(write_runbook):
    path = write_runbook(GROUP)
    result = _runner().run(path)
    assert result.status == "rolled_back"
    assert (path.parent / "undone.txt").read_text() == "{'weight': 5}"


def test_a_failed_step_keeps_what_it_logged_and_a_broken_gate_reason_still_asks(write_runbook):
    gated = """
from runbook import Approval, step

@step
def check(log, retries=2):
    log.warning("disk at 97%%, %s retries", retries)
    return retries

@step(approval=Approval(reason=lambda check: 1 / 0))
def switch(check):
    return check
"""
    paused = _runner().run(load(write_runbook(gated, name="gated")))
    assert paused.status == "paused"
    assert paused.steps["check"].output == 2  # a parameter's own default
    assert paused.steps["check"].log == [{"level": "WARNING", "message": "disk at 97%, 2 retries"}]
    asked = next(e for e in paused.audit if e.kind == "approval_requested")
    assert asked.data["reason"].startswith("(reason unavailable: ZeroDivisionError")

    broken = """
from runbook import step

@step
def broken(log):
    log.error("giving up")
    raise RuntimeError("broken")
"""
    result = _runner().run(load(write_runbook(broken, name="broken")))
    failed = next(e for e in result.audit if e.kind == "step_failed" and e.step == "broken")
    assert failed.data["log"] == [{"level": "ERROR", "message": "giving up"}]


def test_a_dry_run_plans_a_when_that_depends_on_a_mutating_step(write_runbook):
    source = """
from runbook import step

@step
def stage():
    return 1

@step(when=lambda stage: stage > 0)
def deploy(stage):
    return stage

@step(required=False)
def optional():
    raise RuntimeError("no")

@step(when=lambda optional: True)
def after_optional():
    return 1
"""
    rb = load(write_runbook(source))
    planned = _runner(dry_run=True).run(rb)
    assert planned.steps["deploy"].reason == "when: decided at run time"
    real = _runner().run(rb)
    assert real.steps["after_optional"].status == "skipped"  # its when= input failed


def test_runner_close_leaves_a_plugin_provider_that_has_nothing_to_close():
    from runbook.hookspecs import Provider, hookimpl

    class Bare:
        """A plugin's lock provider without ``close``."""

    class Plugin:
        @hookimpl
        def runbook_lock_providers(self) -> list[Provider]:
            return [Provider("bare", lambda url, **_: Bare(), "nothing to close")]

    runner = Runner(store=None, audit=(), locks="bare://", plugins=[Plugin()])
    assert isinstance(runner.lock_provider, Bare)
    runner.close()
    assert runner.providers._locks is None


def test_a_lock_template_naming_an_unknown_param_is_a_usage_error(write_runbook):
    rb = load(
        write_runbook(
            'from runbook import step\n@step(lock="db-{params.nope}")\ndef a():\n    return 1\n'
        )
    )
    with pytest.raises(UsageError, match="nope"):
        _runner().run(rb)


def test_without_the_opentelemetry_api_attempts_run_without_spans(write_runbook, monkeypatch):
    from runbook import tracing

    monkeypatch.setattr(tracing, "_trace", None)  # as in an install without opentelemetry-api
    rb = load(write_runbook("from runbook import step\n@step\ndef a():\n    return 1\n"))
    assert _runner().run(rb).status == "succeeded"


def _refusing_sqlite_store(path: Path, status: str) -> Any:
    """A SQLite run store (transactions: outcomes are held and joined) that refuses to save a
    step row with ``status``."""
    from runbook.store.sqlite import SqliteStore

    class Refusing(SqliteStore):
        def save_steps(self, steps: Any) -> None:  # a transition's rows (save_step: one)
            if any(step.status == status for step in steps):
                raise OSError("disk full")
            super().save_steps(steps)

    return Refusing(path)


def test_a_held_outcome_whose_commit_fails_stops_the_run_and_rolls_back(write_runbook, tmp_path):
    """quick finishes while slow is already running and nothing new is ready: its outcome's row
    is held for the commit on the next turn of the loop (no step start takes it). That commit
    fails (the disk is full), so the run stops there: slow is cancelled, quick undone, the run
    ends rolled back (exit 1) with the store's error in its result, its row and its trail.

    Deterministic whatever ran before: quick yields once, so slow has started (asyncio runs
    ready tasks in order) before quick's outcome is held; slow then waits on an event nobody
    sets, so only the failed commit's cancellation ends it (its timeout is a safety net)."""
    source = """
import asyncio
from runbook import rollback, step

DONE = []

@step(reversible=True)
async def quick():
    await asyncio.sleep(0)  # one turn of the loop: slow starts before quick's outcome is held
    DONE.append("quick")
    return 1

@rollback(quick)
def undo_quick(quick):
    DONE.append("undo quick")

@step(timeout=10)
async def slow():
    await asyncio.Event().wait()  # cancelled by the failed commit
    DONE.append("slow")
"""
    rb = load(write_runbook(source))
    store = _refusing_sqlite_store(tmp_path / "runs.db", "succeeded")
    result = _runner(store).run(rb)
    assert rb.module.DONE == ["quick", "undo quick"]
    assert result.status == "rolled_back" and result.exit_code == 1
    assert result.error == "StoreError: run store failed: OSError: disk full"
    assert result.steps["slow"].status == "cancelled"
    assert result.steps["quick"].rollback == "rolled_back"
    kinds = [(e.kind, e.step) for e in result.audit]
    # slow was running when quick's outcome was held: the failed commit is what stopped it
    assert kinds.index(("step_started", "slow")) < kinds.index(("step_succeeded", "quick"))
    assert kinds[-4:] == [
        ("step_failed", "slow"),
        ("rollback_started", "quick"),
        ("rollback_succeeded", "quick"),
        ("run_finished", None),
    ]
    assert result.audit[-1].data["error"] == result.error
    (run,) = store.list_runs()
    assert (run.status, run.error) == ("rolled_back", result.error)
    stored = store.get_steps(run.run_id)
    assert (stored["quick"].status, stored["slow"].status) == ("rolled_back", "cancelled")


def test_a_joined_audit_write_refused_still_stores_the_outcome(write_runbook, tmp_path):
    """A sqlite:// trail in the run store's own file writes inside the store's transaction; when
    it refuses a step's outcome, that transaction is rolled back and the row is written alone:
    the outcome is stored even though the audit refused it, and the run stops."""
    from runbook.audit.sqlite import SqliteSink
    from runbook.store.sqlite import SqliteStore

    class RefusingSink(SqliteSink):
        def append_many(self, events: Any, conn: Any = None) -> Any:
            if any(e.kind == "step_succeeded" for e in events):
                raise AuditError("audit sink refused step_succeeded: disk full")
            return super().append_many(events, conn)

    db = tmp_path / "runs.db"
    store = SqliteStore(db)
    sink = RefusingSink(f"sqlite:///{db}", str(db))
    source = """
from runbook import rollback, step

DONE = []

@step(reversible=True)
def first():
    DONE.append("first")
    return 1

@rollback(first)
def undo_first(first):
    DONE.append("undo first")

@step
def second(first):
    DONE.append("second")
"""
    rb = load(write_runbook(source))
    result = _runner(store, audit=[sink]).run(rb)
    assert "refused step_succeeded" in (result.error or "")
    assert "second" not in rb.module.DONE  # nothing ran after the refused outcome
    assert rb.module.DONE[-1] == "undo first"
    (run,) = store.list_runs()
    assert store.get_steps(run.run_id)["first"].status in ("succeeded", "rolled_back")


def test_a_joined_sink_that_cannot_prepare_its_table_is_written_on_its_own(write_runbook, tmp_path):
    from runbook.audit.sqlite import SqliteSink
    from runbook.store.sqlite import SqliteStore

    class Unprepared(SqliteSink):
        def prepare(self) -> None:
            raise OSError("cannot create the table inside this file now")

    db = tmp_path / "runs.db"
    store = SqliteStore(db)
    sink = Unprepared(f"sqlite:///{db}", str(db))
    rb = load(write_runbook("from runbook import step\n@step\ndef a():\n    return 1\n"))
    result = _runner(store, audit=[sink]).run(rb)
    assert result.status == "succeeded", result.error
    assert [e.kind for e in result.audit][-1] == "run_finished"


def test_a_run_nobody_listens_to_retries_without_building_events(write_runbook):
    source = """
from runbook import step

TRIES = []

@step(retries=1, backoff=0)
def flaky():
    TRIES.append(1)
    if len(TRIES) == 1:
        raise RuntimeError("first try")
    return len(TRIES)
"""
    rb = load(write_runbook(source))
    result = Runner(store=None, audit=(), locks=None, actor="alice").run(rb)
    assert result.status == "succeeded" and result.steps["flaky"].output == 2
    assert "step_retried" not in [e.kind for e in result.audit]  # nothing was built for it


def test_a_non_finite_param_is_refused_before_anything_is_recorded(write_runbook):
    # It once ran: the audit wrote "NaN", the store a bare NaN no JSON reader accepts.
    source = """
from runbook import param, step

ratio = param("ratio", type=float)

@step
def a(params):
    return str(params.ratio)
"""
    rb = load(write_runbook(source))
    sink = MemorySink()
    with pytest.raises(ParamError, match="'ratio' from -p: 'nan' is NaN or Infinity"):
        _runner(audit=[sink], params={"ratio": "nan"}).run(rb)
    assert list(sink.events()) == []
