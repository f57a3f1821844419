"""The step tasks of one run: up to ``max_parallel`` at once, started as their inputs are ready.

The coordinator (``runbook.coordinator``) decides what is ready; this module only keeps that many
``asyncio`` tasks running. It is event-driven: each finished task releases its dependents and
starts what is ready from its done-callback, instead of ``asyncio.wait`` in a loop, which keeps
the per-step cost flat; the run's coroutine only waits for the moment nothing runs any more.

A finished step's outcome is held for the next steps' start (one write for both,
``runbook.recorder``); whatever is still held is written on the next turn of the loop. A write
that fails there (a refused store or required sink, which the recorder reports to the run)
cancels what is running, so nothing goes on past an outcome that is not durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from runbook.errors import AuditError, StoreError

if TYPE_CHECKING:
    from runbook.coordinator import Coordinator
    from runbook.grouping import StartGroup
    from runbook.recorder import RunRecorder


def uncancel() -> None:
    """Take back the cancellation just caught, so this task can finish what it must."""
    task = asyncio.current_task()
    assert task is not None  # the engine always runs inside a task
    task.uncancel()


async def _no_step(name: str) -> None:
    """``run_step`` once the run is over: there is nothing left to start."""


def _no_error(exc: BaseException) -> None:
    """``on_error`` once the run is over: there is nothing left to stop."""


class StepTasks:
    """The running step tasks of one run, by task (the step's name as value)."""

    def __init__(
        self,
        coord: Coordinator,
        rec: RunRecorder,
        starts: StartGroup,
        *,
        group: bool,
        limit: int,
        run_step: Callable[[str], Coroutine[Any, Any, None]],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.running: dict[asyncio.Task[None], str] = {}
        self._coord = coord
        self._rec = rec
        self._starts = starts
        self._group = group
        self._limit = limit
        self._run_step = run_step
        self._on_error = on_error

    async def run(self) -> None:
        """Start what is ready, and return once nothing runs any more."""
        self._coord.start()
        self._loop = asyncio.get_running_loop()
        self._idle = self._loop.create_future()
        self._pump()
        if self.running:
            await self._idle
        self._rec.flush()

    def _pump(self) -> None:
        running = self.running
        for name in self._coord.take_ready(self._limit - len(running)):
            task = self._loop.create_task(self._run_step(name))
            running[task] = name
            task.add_done_callback(self._task_done)
        if not running and not self._idle.done():
            self._idle.set_result(None)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # Always still tracked: this callback is registered before any gather() awaits the
        # task, and done callbacks run in registration order (nothing to check).
        self.running.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._on_error(exc)
        if self._coord.stopping:
            for other in self.running:
                other.cancel()
        self._pump()
        # A finished step's outcome is held for the next steps' start (one write for both,
        # runbook.recorder); the tasks just started get to take it first (their batch, when
        # they are several: runbook.grouping), and whatever this step left held then is
        # written on the next turn of the loop, before anything else.
        self._loop.call_soon(self._flush, self._rec.holds)

    def _flush(self, upto: int) -> None:
        if self._group and self._starts.carries(
            self._rec
        ):  # its write, due on this turn or the next,
            return  # carries what is held
        try:
            self._rec.flush(upto)
        except (AuditError, StoreError):  # reported by the recorder: stop what is running
            for task in self.running:
                task.cancel()
            self._pump()

    def release(self) -> None:
        """Once the run is over: no callback into the run is kept (each made a reference
        cycle with the execution that owns these tasks; tests/core/test_run_garbage.py)."""
        self._run_step, self._on_error = _no_step, _no_error

    async def cancel_all(self) -> None:
        """Cancel every running step task and wait until each has ended."""
        running = list(self.running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        self.running.clear()
