"""Starts of steps that become ready together, recorded as ONE durable transition.

A step's start must be durable (the store says ``running``, then its ``step_started`` is in the
other sinks) before its side effects (docs/durable-runs.md, rule 1). Recorded one by one, the
branches of a fan-out pay one commit and one ``fsync`` each, although the scheduler launched
them in the same pass and none of them can have done anything yet. Here a start that is not
alone (other steps run or are being launched) joins a batch, written on the next turn of the
event loop: the steps launched in the same pass all reach their start on this one (unless they
first wait for a lock). It is written as one ``RunRecorder.steps_started``: one store commit,
carrying the outcomes held meanwhile (``RunRecorder.write``), and one append per other sink.
Runs of one ``Runner`` on one event loop share a group: their starts on the same turn are one
write as well (``starts_together``).
No member's side effects begin before the write returns, so rule 1 holds for each of them, and
a crash anywhere in it leaves every member either not started or found running by ``resume``.

A member cancelled while it waits (the run is stopping) writes the batch at once: its start is
then durable, and the driver records its cancellation as it does for a step cancelled in its
effects, so the trail never has an outcome without its start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from runbook.media import Part, can_write_together, write_together

if TYPE_CHECKING:
    from runbook.recorder import RunRecorder
    from runbook.result import StepResult

Starts = Sequence[tuple["StepResult", int]]
# Writes each owner's starts (several owners: one write where their media allow it) and says
# what each owner's starts must raise (None: durable), in the order given.
Writer = Callable[[Sequence[tuple[Any, Starts]]], Sequence[BaseException | None]]


class _Batch:
    __slots__ = ("errors", "starts", "waiters")

    def __init__(self) -> None:
        self.starts: dict[Any, list[tuple[StepResult, int]]] = {}  # by owner, in join order
        self.waiters: list[tuple[Any, asyncio.Future[None]]] = []
        self.errors: dict[Any, BaseException] = {}


class StartGroup:
    """The open batch of starts of the runs that share it (one run's, or every run of one
    ``Runner`` on one event loop), written by ``write`` (``starts_together``).

    Several runs on one store and the same sinks that reach a start on the same turn are one
    transition too: one append, one commit for all of them. A run ``enter``s the group for its
    execution and ``leave``s it at its end; while others are in it, a start that would be alone
    in its run joins the batch (``shared``) instead of being written at once.
    """

    def __init__(self, write: Writer) -> None:
        self._write = write
        self._batch: _Batch | None = None
        self._members = 0

    def enter(self) -> None:
        self._members += 1

    def leave(self) -> None:
        self._members -= 1

    @property
    def shared(self) -> bool:
        """Other runs are in the group: their starts may join this one's."""
        return self._members > 1

    def carries(self, owner: Any) -> bool:
        """A batch waits to be written with a start of ``owner``: it carries whatever outcome
        ``owner`` holds until then."""
        batch = self._batch
        return batch is not None and owner in batch.starts

    async def join(self, owner: Any, res: StepResult, attempt: int) -> None:
        """Return once this start is durable with the others of its batch (or raise why not)."""
        loop = asyncio.get_running_loop()
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            # The steps launched in the same pass reach their start on this turn of the loop:
            # the batch is written on the next one, before any of them goes on.
            loop.call_soon(self.flush)
        waiter: asyncio.Future[None] = loop.create_future()
        batch.starts.setdefault(owner, []).append((res, attempt))
        batch.waiters.append((owner, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            # This start durable first, so the driver may record its end. The write was due
            # before the cancellation could wake this task (call_soon is FIFO), so this is a
            # no-op but on a loop that orders callbacks otherwise.
            self.flush()
            if (error := batch.errors.get(owner)) is not None:
                raise error from None
            raise

    def flush(self) -> None:
        """Write the open batch, if any, and wake its members (with their run's error)."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        owners = list(batch.starts.items())
        try:
            results = self._write(owners)
        except Exception as exc:  # a writer that raised: every member's start is refused
            results = [exc] * len(owners)
        for (owner, _), error in zip(owners, results, strict=True):
            if error is not None:
                batch.errors[owner] = error
        for owner, waiter in batch.waiters:
            if waiter.done():  # its task was cancelled meanwhile
                continue
            error = batch.errors.get(owner)
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(None)


# -- the writer of a batch: one write for the runs whose media allow it ----------------------


def starts_together(
    batches: Sequence[tuple[RunRecorder, Sequence[tuple[StepResult, int]]]],
) -> list[BaseException | None]:
    """The starts of several runs that reached them on the same turn of the loop, as ONE
    write where their media allow it (one store, the same sinks, a leading trail or only sinks
    in the store's file: ``runbook.media.write_together``), else each run's own; the error each
    run's starts raise (None: durable)."""
    first = batches[0][0]
    shared = len(batches) > 1 and all(
        rec.store is first.store and rec.audit.sinks == first.audit.sinks for rec, _ in batches
    )
    if not shared or not can_write_together(first.media):
        return [_own_write(rec, starts) for rec, starts in batches]
    errors: list[BaseException | None] = [None] * len(batches)
    parts: list[tuple[int, Part]] = []
    with contextlib.ExitStack() as stack:
        for rec, _ in sorted(batches, key=lambda batch: id(batch[0])):
            stack.enter_context(rec._lock)
        for i, (rec, starts) in enumerate(batches):
            try:
                parts.append((i, rec.part_of(starts)))
            except Exception as exc:  # reported through on_fatal; its run's starts raise
                errors[i] = exc
        if parts:
            write_together([part for _, part in parts])
    for i, part in parts:
        rec, starts = batches[i]
        try:
            rec.finish(part, starts)
        except Exception as exc:
            errors[i] = exc
    return errors


def _own_write(rec: RunRecorder, starts: Sequence[tuple[StepResult, int]]) -> BaseException | None:
    try:
        rec.steps_started(starts)
    except Exception as exc:
        return exc
    return None
