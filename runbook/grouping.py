"""Starts of steps that become ready together, recorded as ONE durable transition.

A step's start must be durable (the store says ``running``, then its ``step_started`` is in the
other sinks) before its side effects (docs/durable-runs.md, rule 1). Recorded one by one, the
branches of a fan-out pay one commit and one ``fsync`` each, although the scheduler launched
them in the same pass and none of them can have done anything yet. Here a start that is not
alone (other steps run or are being launched) joins a batch, written on the next turn of the
event loop: the steps launched in the same pass all reach their start on this one (unless they
first wait for a lock). It is written as one ``RunRecorder.steps_started``: one store commit,
carrying the outcomes held meanwhile (``RunRecorder.write``), and one append per other sink.
No member's side effects begin before the write returns, so rule 1 holds for each of them, and
a crash anywhere in it leaves every member either not started or found running by ``resume``.

A member cancelled while it waits (the run is stopping) writes the batch at once: its start is
then durable, and the driver records its cancellation as it does for a step cancelled in its
effects, so the trail never has an outcome without its start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runbook.result import StepResult


class _Batch:
    __slots__ = ("error", "starts", "waiters")

    def __init__(self) -> None:
        self.starts: list[tuple[StepResult, int]] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.error: Exception | None = None


class StartGroup:
    """The open batch of starts of one run, written by ``record`` (``steps_started``)."""

    def __init__(self, record: Callable[[Sequence[tuple[StepResult, int]]], None]) -> None:
        self._record = record
        self._batch: _Batch | None = None

    @property
    def open(self) -> bool:
        """A batch waits to be written: it carries whatever outcome is held until then."""
        return self._batch is not None

    async def join(self, res: StepResult, attempt: int) -> None:
        """Return once this start is durable with the others of its batch (or raise why not)."""
        loop = asyncio.get_running_loop()
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            # The steps launched in the same pass reach their start on this turn of the loop:
            # the batch is written on the next one, before any of them goes on.
            loop.call_soon(self.flush)
        waiter: asyncio.Future[None] = loop.create_future()
        batch.starts.append((res, attempt))
        batch.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            # This start durable first, so the driver may record its end. The write was due
            # before the cancellation could wake this task (call_soon is FIFO), so this is a
            # no-op but on a loop that orders callbacks otherwise.
            self.flush()
            if batch.error is not None:
                raise batch.error from None
            raise

    def flush(self) -> None:
        """Write the open batch, if any, and wake its members (with the error, if refused)."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        try:
            self._record(batch.starts)
        except Exception as exc:  # reported through on_fatal by the recorder; each member raises
            batch.error = exc
        for waiter in batch.waiters:
            if waiter.done():  # its task was cancelled meanwhile
                continue
            if batch.error is not None:
                waiter.set_exception(batch.error)
            else:
                waiter.set_result(None)
