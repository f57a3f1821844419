"""``local://``: step attempts in this process, sync steps in worker threads, async on the loop.

A sync step runs in a thread pool of ``max_parallel`` threads with the caller's context variables
(current step, fencing token, deadline), so ``ctx`` and the cooperative ``clock.sleep`` work in
it. A thread cannot be killed: on timeout the attempt reports ``StepTimeout`` and the thread is
remembered as still running (``still_running``); on cancellation the attempt waits for the thread
to return before it lets the cancellation through.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from runbook.clock import CANCEL, DEADLINE, Clock
from runbook.errors import StepAborted, StepTimeout
from runbook.executors import Attempt
from runbook.hookspecs import Provider, hookimpl


class LocalExecutor:
    def __init__(self, url: str = "local://", *, clock: Clock, max_parallel: int = 8) -> None:
        self.url = url
        self.clock = clock
        self.max_parallel = max(1, max_parallel)
        self._pool: ThreadPoolExecutor | None = None
        # Sync steps that timed out while their thread still runs (threads cannot be killed).
        self._stragglers: dict[str, Future[Any]] = {}

    async def run(self, attempt: Attempt) -> Any:
        timeout = attempt.timeout
        thread_future: Future[Any] | None = None
        future: asyncio.Future[Any] | None = None
        if timeout:
            DEADLINE.set((self.clock.monotonic() + timeout, attempt.step, timeout))
        try:
            if attempt.is_async:
                coro = _contained(attempt, attempt.func(**attempt.kwargs))
                return await (asyncio.wait_for(coro, timeout) if timeout else coro)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_parallel, thread_name_prefix="runbook-step"
                )
            cancel = threading.Event()  # clock.sleep() in the thread ends when this is set
            token = CANCEL.set(cancel)
            try:
                context = contextvars.copy_context()
            finally:
                CANCEL.reset(token)

            def call() -> Any:
                return context.run(_call_contained, attempt)

            thread_future = self._pool.submit(call)
            future = asyncio.wrap_future(thread_future)
            try:
                return await (asyncio.wait_for(future, timeout) if timeout else future)
            except TimeoutError:
                cancel.set()  # timed out: the straggling thread's clock waits stop now
                raise
            except asyncio.CancelledError:
                cancel.set()  # cancelled: a clock.sleep() in the thread ends at once
                # A thread cannot be interrupted: let the step return before rollbacks start,
                # so an undo never races the half-done thing it undoes (at once if it has).
                with contextlib.suppress(BaseException):
                    await asyncio.shield(asyncio.wrap_future(thread_future))
                raise
        except TimeoutError as exc:
            # Only wait_for running out means the step's own timeout fired; a TimeoutError the
            # step raised itself (a probe's WaitTimeout, say) keeps its own message.
            if (
                isinstance(exc, StepTimeout)
                or not timeout
                or not isinstance(exc.__cause__, asyncio.CancelledError)
            ):
                raise
            if thread_future is not None and not thread_future.done():
                self._stragglers[attempt.step] = thread_future
            raise StepTimeout(f"step {attempt.step!r} timed out after {timeout:g}s") from None
        finally:
            if timeout:
                DEADLINE.set(None)
            # A failed step's futures hold its exception, whose traceback holds this frame:
            # dropped here, they are no cycle (freed at once, not by the cyclic collector).
            thread_future = future = None

    def still_running(self, step: str) -> bool:
        future = self._stragglers.get(step)
        return future is not None and not future.done()

    async def wait_stopped(self, step: str, timeout: float) -> bool:
        future = self._stragglers.get(step)
        if future is None:
            return True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        return future.done()

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def aborted(attempt: Attempt, exc: BaseException) -> StepAborted:
    what = "rollback of step" if attempt.rollback else "step"
    if isinstance(exc, SystemExit):
        return StepAborted(f"{what} {attempt.step!r} called sys.exit({exc.code!r})")
    return StepAborted(f"{what} {attempt.step!r} raised KeyboardInterrupt")


def _call_contained(attempt: Attempt) -> Any:
    """A sync step in its thread: its own SystemExit/KeyboardInterrupt is a step failure."""
    try:
        return attempt.func(**attempt.kwargs)
    except (SystemExit, KeyboardInterrupt) as exc:
        raise aborted(attempt, exc) from None


async def _contained(attempt: Attempt, coro: Any) -> Any:
    """An async step, inside its own task: asyncio would otherwise stop the loop on these."""
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise aborted(attempt, exc) from None


def _open(url: str, *, clock: Clock, max_parallel: int = 8, **_: Any) -> LocalExecutor:
    return LocalExecutor(url, clock=clock, max_parallel=max_parallel)


@hookimpl
def runbook_executors() -> list[Provider]:
    return [Provider("local", _open, "in this process: threads for sync steps, asyncio for async")]
