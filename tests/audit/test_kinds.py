"""Every audit kind appears where it should, in order, for each kind of run."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from runbook import Runner, load
from runbook.errors import LockHeld


def _runbook(tmp_path: Path, source: str) -> Path:
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / f"rb_{uuid.uuid4().hex[:6]}.py"
    path.write_text(source)
    return path


def _kinds(result, step: str | None = "*") -> list[tuple[str, str | None]]:
    return [(e.kind, e.step) for e in result.audit]


def _runner(**kw) -> Runner:
    kw.setdefault("store", f"memory://{uuid.uuid4().hex}")
    kw.setdefault("locks", f"memory://{uuid.uuid4().hex}")
    return Runner(actor="alice", seed=0, **kw)


def test_success(tmp_path: Path) -> None:
    rb = _runbook(tmp_path, "from runbook import step\n@step\ndef a():\n    return 1\n")
    assert _kinds(_runner().run(rb)) == [
        ("run_started", None),
        ("step_started", "a"),
        ("step_succeeded", "a"),
        ("run_finished", None),
    ]


def test_failure_with_rollback_retry_and_skip(tmp_path: Path, fake_clock) -> None:
    rb = _runbook(
        tmp_path,
        """
from runbook import rollback, step

@step(reversible=True)
def a(ctx):
    ctx.record_change("db", 1, 2)
    return 1

@rollback(a)
def undo_a(a):
    pass

@step(when=lambda: False)
def b(a):
    return 2

@step(retries=1, backoff=1)
def c(a):
    raise RuntimeError("no")
""",
    )
    result = _runner(resources={"clock": fake_clock}).run(rb)
    assert result.status == "rolled_back"
    assert _kinds(result) == [
        ("run_started", None),
        ("step_started", "a"),
        ("change_recorded", "a"),
        ("step_succeeded", "a"),
        ("step_skipped", "b"),
        ("step_started", "c"),
        ("step_retried", "c"),
        ("step_started", "c"),
        ("step_failed", "c"),
        ("rollback_started", "a"),
        ("rollback_succeeded", "a"),
        ("run_finished", None),
    ]
    retried = next(e for e in result.audit if e.kind == "step_retried")
    assert retried.data["attempt"] == 1 and "RuntimeError: no" in retried.data["error"]


def test_rollback_failed(tmp_path: Path) -> None:
    rb = _runbook(
        tmp_path,
        """
from runbook import rollback, step

@step(reversible=True)
def a():
    return 1

@rollback(a)
def undo_a():
    raise OSError("stuck")

@step
def b(a):
    raise RuntimeError("no")
""",
    )
    result = _runner().run(rb)
    assert result.status == "rollback_failed"
    assert ("rollback_failed", "a") in _kinds(result)


GATED = """
from runbook import rollback, step

@step(reversible=True)
def a():
    return 1

@rollback(a)
def undo_a(a):
    pass

@step(approval=True)
def gate(a):
    return 2
"""


def test_approval_granted_then_resumed(tmp_path: Path) -> None:
    rb = _runbook(tmp_path, GATED)
    store = f"memory://{uuid.uuid4().hex}"
    paused = _runner(store=store).run(rb)
    assert _kinds(paused)[-4:] == [
        ("step_succeeded", "a"),
        ("approval_requested", "gate"),
        ("run_paused", None),
        ("run_finished", None),
    ]
    sink = _runner(store=store)
    sink.approve(paused.run_id, actor="bob")
    resumed = _runner(store=store).resume(paused.run_id)
    assert _kinds(resumed) == [
        ("run_resumed", None),
        ("step_started", "gate"),
        ("step_succeeded", "gate"),
        ("run_finished", None),
    ]


def test_approval_denied_and_cancel(tmp_path: Path) -> None:
    rb = _runbook(tmp_path, GATED)
    store = f"memory://{uuid.uuid4().hex}"
    paused = _runner(store=store).run(rb)
    denied = _runner(store=store).deny(paused.run_id, actor="bob", reason="not today")
    assert denied.status == "rolled_back"
    assert _kinds(denied) == [
        ("run_resumed", None),
        ("rollback_started", "a"),
        ("rollback_succeeded", "a"),
        ("run_finished", None),
    ]
    paused = _runner(store=store).run(rb)
    cancelled = _runner(store=store).cancel(paused.run_id, actor="carol")
    assert cancelled.status == "cancelled"
    assert _kinds(cancelled)[-2:] == [("run_cancelled", None), ("run_finished", None)]
    assert [e.actor for e in cancelled.audit if e.kind == "run_cancelled"] == ["carol"]


def test_locks_acquired_released_and_denied(tmp_path: Path) -> None:
    rb = load(
        _runbook(
            tmp_path,
            """
from runbook import step
lock = "web-{env}"

@step(lock="db")
def a(ctx):
    return ctx.fencing_token
""",
        )
    )
    locks = f"memory://{uuid.uuid4().hex}"
    result = _runner(locks=locks, env="prod").run(rb)
    kinds = _kinds(result)
    assert kinds == [
        ("run_started", None),
        ("lock_acquired", None),
        ("lock_acquired", "a"),
        ("step_started", "a"),
        ("step_succeeded", "a"),
        ("lock_released", "a"),
        ("lock_released", None),
        ("run_finished", None),
    ]
    acquired = [e.data for e in result.audit if e.kind == "lock_acquired"]
    assert [d["lock"] for d in acquired] == ["web-prod", "db"]
    assert result.steps["a"].output == acquired[1]["fencing_token"]

    from runbook.locks.memory import MemoryLocks

    MemoryLocks.open(locks).acquire("web-prod", "someone-else", actor="dave", lease=60)
    runner = _runner(locks=locks, env="prod")
    with pytest.raises(LockHeld, match="dave"):
        runner.run(rb)
    (denied,) = [e for e in runner.sinks[0].events() if e.kind == "lock_denied"]
    assert denied.data["holder_actor"] == "dave"


def test_interrupted_run_records_cancelled(tmp_path: Path) -> None:
    path = _runbook(
        tmp_path,
        """
import asyncio
from runbook import step
STARTED = asyncio.Event()

@step
async def slow():
    STARTED.set()
    await asyncio.Event().wait()  # until the run is cancelled
""",
    )
    rb = load(path)

    async def interrupt() -> object:
        task = asyncio.ensure_future(_runner().arun(rb))
        await rb.module.STARTED.wait()
        task.cancel()
        return await task

    result = asyncio.run(interrupt())
    assert result.status == "cancelled"
    assert _kinds(result)[-3:] == [
        ("step_failed", "slow"),
        ("run_cancelled", None),
        ("run_finished", None),
    ]


def test_a_run_refused_by_a_held_lock_is_recorded_as_failed(tmp_path: Path) -> None:
    rb = _runbook(
        tmp_path, 'from runbook import step\nlock = "web"\n@step\ndef a():\n    return 1\n'
    )
    store, locks = f"memory://{uuid.uuid4().hex}", f"memory://{uuid.uuid4().hex}"
    from runbook.locks.memory import MemoryLocks

    MemoryLocks.open(locks).acquire("web", "other-run", actor="dave", lease=60)
    runner = _runner(store=store, locks=locks)
    with pytest.raises(LockHeld):
        runner.run(rb)
    (run,) = runner.store.list_runs()
    assert run.status == "failed"
    assert "held by run other-run (dave)" in (run.error or "")
    assert runner.store.get_steps(run.run_id) == {}
    kinds = [e.kind for e in runner.sinks[0].events()]
    assert kinds == ["run_started", "lock_denied", "run_finished"]


def test_a_lock_template_that_cannot_expand_is_a_usage_error_before_anything_runs(
    tmp_path: Path,
) -> None:
    from runbook.errors import UsageError

    rb = _runbook(
        tmp_path,
        """
from runbook import step

@step(lock="db-{params.shard}")
def a():
    return 1
""",
    )
    runner = _runner()
    with pytest.raises(
        UsageError,
        match=r"step 'a' lock 'db-\{params.shard\}' cannot be expanded.*no parameter 'shard'",
    ):
        runner.run(rb)
    assert runner.store.list_runs() == []
