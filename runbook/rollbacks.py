"""Driving a run's rollback: the undo of each step the coordinator names, newest first.

The coordinator (``runbook.coordinator``) decides the order (``next_rollback``) and what each
outcome means (``on_rolled_back``, ``on_rollback_failed``, and ``RollbackHalted``: undoing more
would make things worse, so the rest is left to a human); the executor runs each rollback
function with the step's output and the resources it names. The whole undo is shielded: a
cancellation (a Ctrl-C arriving now) never abandons a rollback half-way, which is the one thing
worse than waiting for it. A step whose worker thread is still running is not undone under it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from runbook.context import CURRENT_STEP
from runbook.errors import RollbackHalted
from runbook.executors import Attempt
from runbook.recorder import error_text
from runbook.scheduling import uncancel

if TYPE_CHECKING:
    from runbook.engine import Execution


async def rollback_all(x: Execution) -> None:
    """Undo, shielded (see the module's docstring)."""
    undo = asyncio.ensure_future(_undo_all(x))
    while True:
        try:
            return await asyncio.shield(undo)
        except asyncio.CancelledError:
            if undo.done():  # it ended too (SystemExit stopped the loop): let this through
                raise
            uncancel()  # the undo goes on; this task waits for it again


async def _undo_all(x: Execution) -> None:
    coord = x.coord
    coord.begin_rollback()
    while (name := coord.next_rollback()) is not None:
        await _rollback(x, name)


async def _rollback(x: Execution, name: str) -> None:
    step, coord = x.steps[name], x.coord
    rb = step.rollback
    assert rb is not None
    res = x.results[name]
    CURRENT_STEP.set(name)
    coord.on_rollback_started(name)
    x.rec.rollback_started(res)
    if x.executor.still_running(name):
        # Undoing while the step's thread is still doing would race it: give the thread the
        # step's timeout again to finish, then leave the undo to a human.
        grace = min(60.0, max(5.0, step.options.timeout or 0.0))
        if not await x.executor.wait_stopped(name, grace):
            text = (
                f"step {name!r} is still running in its worker thread {grace:g}s after "
                "its timeout; not rolled back: check it and undo by hand"
            )
            coord.on_rollback_failed(name, text)
            return x.rec.rollback_finished(res)
    kwargs: dict[str, Any] = {}
    output = x.outputs.get(name)
    for arg in rb.args:
        if arg.source == "extra":  # group steps receive their own output as ``output``
            kwargs[arg.name] = output
        elif arg.source == "step":
            kwargs[arg.name] = x.outputs.get(arg.key, arg.default if arg.has_default else None)
        elif arg.source == "name":
            kwargs[arg.name] = x.s.scope.get(arg.key)
        else:
            kwargs[arg.name] = arg.default
    attempt = Attempt(
        x.s.info.run_id,
        name,
        rb.func,
        kwargs,
        rb.is_async,
        step.options.timeout,
        rollback=True,
    )
    try:
        await x.executor.run(attempt)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        # RollbackHalted: undoing more would make things worse; the rest is left to a human.
        halt = isinstance(exc, RollbackHalted)
        coord.on_rollback_failed(name, x.s.redactor.text(error_text(exc)), halt=halt)
    else:
        coord.on_rolled_back(name)
    x.rec.rollback_finished(res)
