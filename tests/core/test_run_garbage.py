"""A finished run leaves no reference cycles: reference counting frees it at once.

Left to the cyclic collector, the objects of every finished run (its execution, scope, ctx,
recorder, step results: ~100 of them) wait for a collector pass, and 100 runs in flight make those
passes a visible share of their cost (bench/concurrency.py). The check is exact: with
``gc.DEBUG_SAVEALL`` every object the collector would free lands in ``gc.garbage``, so after a
run there must be none of runbook's.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from runbook import Runner, load
from runbook.errors import RunbookError

CHAIN = """
from runbook import step

lock = "whole-{env}"

@step(lock="one")
async def first(ctx):
    ctx.record_change("target", 1, 2)
    return {"n": 1}

@step
def second(first, params):
    return first["n"] + 1

@step
async def third(second, injector):
    return second
"""


@contextmanager
def collected() -> Iterator[list[object]]:
    """What the cyclic collector finds once the block is over, of objects made by runbook."""
    found: list[object] = []
    gc.collect()
    was = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(o for o in gc.garbage if type(o).__module__.startswith("runbook"))
    finally:
        gc.set_debug(was)
        gc.garbage.clear()


def _runner() -> Runner:
    return Runner(
        store="memory://", audit=("memory://",), locks="memory://", entry_points=False, actor="t"
    )


def test_a_finished_run_is_freed_by_reference_counting(write_runbook) -> None:
    rb = load(write_runbook(CHAIN))
    runner = _runner()
    runner.run(rb)  # warm: plugins loaded, providers opened
    with collected() as garbage:
        result = runner.run(rb)
        assert result.status == "succeeded"
        del result
    assert [type(o).__qualname__ for o in garbage] == []


def test_concurrent_runs_on_one_loop_leave_no_cycles(write_runbook) -> None:
    unlocked = CHAIN.replace('lock = "whole-{env}"', "").replace('@step(lock="one")', "@step")
    rb = load(write_runbook(unlocked))
    runner = _runner()

    async def runs() -> None:
        results = await asyncio.gather(*(runner.arun(rb) for _ in range(5)))
        assert {r.status for r in results} == {"succeeded"}
        await asyncio.sleep(0)  # the loop's callbacks for the finished runs (their flush)

    asyncio.run(runs())
    with collected() as garbage:
        asyncio.run(runs())
    assert [type(o).__qualname__ for o in garbage] == []


def test_ctx_of_a_finished_run_refuses_to_record(write_runbook) -> None:
    rb = load(
        write_runbook(
            """
            from runbook import step

            kept = []

            @step
            def keep(ctx):
                kept.append(ctx)
            """
        )
    )
    runner = _runner()
    assert runner.run(rb).status == "succeeded"
    (ctx,) = rb.module.kept
    with pytest.raises(RunbookError, match="is over: change_recorded is not recorded"):
        ctx.record_change("late", 1, 2)


FAILING = """
from runbook import rollback, step

@step(reversible=True)
{kind}def made():
    return 1

@rollback(made)
{kind}def unmade(made):
    pass

@step(retries=1, backoff=0)
{kind}def breaks(made):
    raise RuntimeError("boom")
"""


@pytest.mark.parametrize("kind", ["async ", ""])
def test_a_failed_and_rolled_back_run_leaves_no_cycles(write_runbook, kind: str) -> None:
    # A step's exception holds its traceback, which holds the frames that caught it: a frame
    # keeping the exception (the engine's attempt loop, the executor's futures) was a cycle.
    rb = load(write_runbook(FAILING.format(kind=kind)))
    runner = _runner()
    assert runner.run(rb).status == "rolled_back"
    with collected() as garbage:
        result = runner.run(rb)
        assert result.status == "rolled_back"
        del result
    assert [type(o).__qualname__ for o in garbage] == []
