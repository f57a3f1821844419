"""Executors: where one step attempt runs.

The driver (``runbook.engine``) decides nothing here: it hands an executor one ``Attempt`` (the
function, its arguments, its timeout) and awaits the outcome: the return value, or the exception
the step raised (``StepTimeout`` when its timeout ran out). Cancelling the awaiting task cancels
the attempt; an executor must not return from a cancelled attempt before the step's code has
stopped touching the world (a thread that cannot be interrupted is waited for), so that a rollback
never races the half-done thing it undoes.

Executors are opened by URL (``executor = "local://"``, ``--executor URL``) through the
``runbook_executors`` hook; ``local://`` (this process: threads for sync steps, the event loop for
``async def`` steps) is built in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

DEFAULT_EXECUTOR = "local://"


# Not frozen: one is made per attempt, and a frozen dataclass's __init__ (an
# object.__setattr__ per field) cost more than the rest of the hand-off to the executor.
@dataclass(slots=True)
class Attempt:
    """One call of a step's function (or of its rollback) with everything it needs."""

    run_id: str
    step: str
    func: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    is_async: bool = False
    timeout: float | None = None
    attempt: int = 1
    fencing_token: int | None = None
    rollback: bool = False  # the step's rollback, not the step


@runtime_checkable
class Executor(Protocol):
    """Runs step attempts for one run; opened per run, closed when the run ends."""

    url: str

    async def run(self, attempt: Attempt) -> Any:
        """Run the attempt; return its output or raise what it raised (``StepTimeout`` on timeout).

        Cancellation (``asyncio.CancelledError``) propagates once the attempt has stopped.
        """
        ...

    def still_running(self, step: str) -> bool:
        """A timed-out attempt of ``step`` whose code could not be stopped is still running."""
        ...

    async def wait_stopped(self, step: str, timeout: float) -> bool:
        """Give such an attempt ``timeout`` seconds to stop; True once it has."""
        ...

    async def aclose(self) -> None:
        """Release what ``open`` made (threads, connections); called once when the run ends."""
        ...


__all__ = ["DEFAULT_EXECUTOR", "Attempt", "Executor"]
