"""Failures the engine must contain: a step's own sys.exit / KeyboardInterrupt, a lease that ran
out at some moment of a step, a store that refuses a write, a timed-out thread still running."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from runbook import Runner, load
from runbook.errors import DefinitionError
from runbook.locks import manager as lock_manager
from runbook.store.memory import MemoryStore


@pytest.fixture
def runner(store_url):
    def make(**kwargs: Any) -> Runner:
        kwargs.setdefault("store", store_url)
        kwargs.setdefault("locks", f"memory://failures-{uuid.uuid4().hex}")
        kwargs.setdefault("actor", "tester")
        kwargs.setdefault("seed", 0)
        return Runner(**kwargs)

    return make


EXITS = """
import sys
from runbook import rollback, step

DONE = []

@step(reversible=True)
def first():
    return 1

@rollback(first)
def undo_first():
    DONE.append("undo first")

@step
{prefix}def second(first):
    {raise_}
"""


@pytest.mark.parametrize("prefix", ["", "async "])
@pytest.mark.parametrize(
    "raise_,message",
    [
        ("sys.exit(0)", "StepAborted: step 'second' called sys.exit(0)"),
        ("sys.exit(3)", "StepAborted: step 'second' called sys.exit(3)"),
        ("raise KeyboardInterrupt", "StepAborted: step 'second' raised KeyboardInterrupt"),
    ],
)
def test_a_steps_own_exit_is_a_step_failure(write_runbook, runner, prefix, raise_, message):
    rb = load(write_runbook(EXITS.format(prefix=prefix, raise_=raise_)))
    result = runner().run(rb)
    assert result.status == "rolled_back" and result.exit_code == 1
    assert result.steps["second"].status == "failed"
    assert result.steps["second"].error == message
    assert rb.module.DONE == ["undo first"]


def test_a_rollback_calling_sys_exit_is_a_failed_rollback(write_runbook, runner):
    rb = load(
        write_runbook(
            """
            import sys
            from runbook import rollback, step

            @step(reversible=True)
            def first():
                return 1

            @rollback(first)
            def undo_first():
                sys.exit(0)

            @step
            def second(first):
                raise RuntimeError("no")
            """
        )
    )
    result = runner().run(rb)
    assert result.status == "rollback_failed" and result.exit_code == 4
    assert "rollback of step 'first' called sys.exit(0)" in result.steps["first"].rollback_error


def test_sys_exit_in_when_is_a_step_failure(write_runbook, runner):
    rb = load(
        write_runbook(
            """
            import sys
            from runbook import step

            @step(when=lambda: sys.exit(0))
            def gated():
                return 1
            """
        )
    )
    result = runner().run(rb)
    assert result.status == "failed"
    assert "when= raised SystemExit" in result.steps["gated"].error


def test_sys_exit_at_import_is_a_definition_error(write_runbook):
    path = write_runbook("import sys\nsys.exit(0)\n")
    with pytest.raises(DefinitionError, match=r"called sys.exit\(0\) while being imported") as info:
        load(path)
    assert info.value.exit_code == 2


# -- leases ------------------------------------------------------------------------------------


class LeaseClock:
    """The lock manager's real-time view, moved by hand (a frozen process, a blocked loop)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


LEASED = """
from runbook import step

@step(lock="db")
def migrate(freeze):
    freeze()  # the process is frozen past its lease, then wakes and the step returns
    return "done"

@step
def after(migrate):
    return migrate
"""


def test_a_lease_lost_while_the_step_ran_fails_it_even_though_it_returned(
    write_runbook, runner, monkeypatch
):
    clock = LeaseClock()
    monkeypatch.setattr(lock_manager, "monotonic", clock)

    def freeze() -> None:
        clock.now += 31.0  # past the 30 s lease, before the keeper could renew it

    rb = load(write_runbook(LEASED), extra_names=["freeze"])
    result = runner(resources={"freeze": freeze}, lease=30.0).run(rb)
    assert result.status == "failed"
    assert result.steps["migrate"].status == "failed"
    assert result.steps["migrate"].error.startswith("LeaseLost: lease on lock 'db' ran out")
    assert result.steps["after"].status == "pending"
    kinds = [e.kind for e in result.audit]
    assert "lock_acquired" in kinds
    assert "lock_released" not in kinds  # never a release of a token someone else may hold now
    failed = next(e for e in result.audit if e.kind == "step_failed")
    assert failed.data["attempt"] == 1


def test_a_lease_lost_is_never_retried(write_runbook, runner, monkeypatch):
    clock = LeaseClock()
    monkeypatch.setattr(lock_manager, "monotonic", clock)
    calls = []

    def freeze() -> None:
        calls.append(1)
        clock.now += 31.0

    source = LEASED.replace('@step(lock="db")', '@step(lock="db", retries=3, backoff=0)')
    rb = load(write_runbook(source), extra_names=["freeze"])
    result = runner(resources={"freeze": freeze}).run(rb)
    assert result.steps["migrate"].status == "failed" and calls == [1]


def test_a_lease_kept_alive_lets_the_step_succeed(write_runbook, runner, monkeypatch):
    clock = LeaseClock()
    monkeypatch.setattr(lock_manager, "monotonic", clock)
    rb = load(write_runbook(LEASED), extra_names=["freeze"])
    result = runner(resources={"freeze": lambda: None}).run(rb)
    assert result.status == "succeeded"
    assert [e.kind for e in result.audit].count("lock_released") == 1


# -- the store and the threads -----------------------------------------------------------------


class FailingStore(MemoryStore):
    """Refuses to save the step named ``fail_on`` once it has succeeded."""

    def __init__(self, fail_on: str) -> None:
        super().__init__(f"memory://failing-{uuid.uuid4().hex}")
        self.fail_on = fail_on

    def save_step(self, step: Any) -> None:
        if step.name == self.fail_on and step.status == "succeeded":
            raise OSError("disk full")
        super().save_step(step)


def test_a_run_store_write_failure_stops_the_run_and_rolls_back(write_runbook, runner):
    rb = load(
        write_runbook(
            """
            from runbook import rollback, step

            DONE = []

            @step(reversible=True)
            def first():
                return 1

            @rollback(first)
            def undo_first():
                DONE.append("undo first")

            @step(reversible=True)
            def second(first):
                return 2

            @rollback(second)
            def undo_second():
                DONE.append("undo second")

            @step
            def third(second):
                DONE.append("third")
            """
        )
    )
    result = runner(store=FailingStore("second")).run(rb)
    assert result.status == "rolled_back"
    assert result.error == "StoreError: run store failed: OSError: disk full"
    assert rb.module.DONE == ["undo second", "undo first"]  # third never ran


def test_a_rollback_is_refused_while_the_timed_out_thread_still_runs(
    write_runbook, runner, monkeypatch
):
    release = threading.Event()

    async def no_grace(self, step: str, timeout: float) -> bool:
        return False  # the thread did not stop within its grace period

    from runbook.executors.local import LocalExecutor

    monkeypatch.setattr(LocalExecutor, "wait_stopped", no_grace)
    rb = load(
        write_runbook(
            """
            from runbook import rollback, step

            DONE = []

            @step(reversible=True, timeout=0.05)
            def slow(release):
                release.wait(10)

            @rollback(slow)
            def undo_slow():
                DONE.append("undo slow")
            """
        ),
        extra_names=["release"],
    )
    try:
        result = runner(resources={"release": release}).run(rb)
    finally:
        release.set()
    assert result.status == "rollback_failed"
    assert result.steps["slow"].status == "failed"
    assert "still running in its worker thread" in result.steps["slow"].rollback_error
    assert rb.module.DONE == []


def test_an_interrupt_during_a_rollback_does_not_abandon_it(write_runbook, runner):
    """The run task cancelled (Ctrl-C) while a rollback runs: that undo and the rest complete."""
    rb = load(
        write_runbook(
            """
            import asyncio
            from runbook import rollback, step

            DONE = []
            STARTED = asyncio.Event()
            GO = asyncio.Event()

            @step(reversible=True)
            def first():
                return 1

            @rollback(first)
            def undo_first():
                DONE.append("undo first")

            @step(reversible=True)
            def second(first):
                return 2

            @rollback(second)
            async def undo_second():
                STARTED.set()
                await GO.wait()  # the run is cancelled meanwhile
                DONE.append("undo second")

            @step
            def third(second):
                raise RuntimeError("no")
            """
        )
    )

    async def main() -> Any:
        task = asyncio.ensure_future(runner().arun(rb))
        await rb.module.STARTED.wait()
        task.cancel()
        for _ in range(10):
            await asyncio.sleep(0)  # turns of the loop: the run task sees its cancellation
        rb.module.GO.set()
        return await task

    result = asyncio.run(main())
    assert rb.module.DONE == ["undo second", "undo first"]
    assert result.status == "rolled_back"
    assert result.steps["second"].rollback == "rolled_back"


def test_runner_close_closes_what_it_opened_and_only_that(tmp_path, monkeypatch):
    from runbook.audit.memory import MemorySink

    given = MemorySink()
    runner = Runner(
        store=f"sqlite:///{tmp_path / 'runs.db'}",
        audit=[f"jsonl://{tmp_path / 'audit.jsonl'}", given],
        locks=f"file://{tmp_path / 'locks'}",
    )
    closed: list[str] = []
    opened = {"store": runner.store, "sink": runner.sinks[0], "locks": runner.lock_provider}
    for name, provider in opened.items():
        monkeypatch.setattr(provider, "close", lambda name=name: closed.append(name))
    monkeypatch.setattr(given, "close", lambda: closed.append("given"))
    with runner:
        pass
    assert sorted(closed) == ["locks", "sink", "store"]  # not the sink the caller passed in
    assert runner.store is not opened["store"]  # used again: opened afresh
    runner.close()
