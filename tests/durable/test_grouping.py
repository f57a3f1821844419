"""Grouped starts (runbook.grouping): one write for the starts of steps launched together, none
of them going on before it, and a refused write stopping every one of them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from runbook import Runner, load
from runbook.audit.memory import MemorySink
from runbook.errors import AuditError, StoreError
from runbook.grouping import StartGroup
from runbook.result import StepResult


class Recording:
    """A writer of batches: records each owner's starts, refuses with ``error`` (or, for an
    owner named in ``refuse``, with that owner's own error)."""

    def __init__(
        self, error: Exception | None = None, refuse: dict[str, Exception] | None = None
    ) -> None:
        self.calls: list[list[str]] = []
        self.writes: list[list[str]] = []  # the owners of each write
        self.error = error
        self.refuse = refuse or {}

    def __call__(
        self, owners: Sequence[tuple[Any, Sequence[tuple[StepResult, int]]]]
    ) -> list[BaseException | None]:
        self.writes.append([owner for owner, _ in owners])
        for _, starts in owners:
            self.calls.append([res.name for res, _ in starts])
        return [self.refuse.get(owner, self.error) for owner, _ in owners]


def test_starts_joined_on_one_turn_are_written_once_before_any_goes_on() -> None:
    record = Recording()
    group = StartGroup(record)
    went_on: list[tuple[str, list[list[str]]]] = []

    async def member(name: str) -> None:
        await group.join("run", StepResult(name), 1)
        went_on.append((name, list(record.calls)))

    async def main() -> None:
        await asyncio.gather(*(member(n) for n in ("a", "b", "c")))

    asyncio.run(main())
    assert record.calls == [["a", "b", "c"]]
    assert [calls for _, calls in went_on] == [[["a", "b", "c"]]] * 3  # all after the write
    assert not group.carries("run")


def test_starts_of_several_runs_on_one_turn_are_one_write_with_their_own_errors() -> None:
    """Two runs reach a start on the same turn: one write for both; the one whose part was
    refused raises, the other goes on."""
    refused = StoreError("run store failed: run b was deleted")
    record = Recording(refuse={"run-b": refused})
    group = StartGroup(record)
    group.enter()
    group.enter()
    assert group.shared

    async def main() -> list[Any]:
        joins = [
            group.join("run-a", StepResult("s1"), 1),
            group.join("run-b", StepResult("s1"), 1),
            group.join("run-a", StepResult("s2"), 1),
        ]
        return await asyncio.gather(*joins, return_exceptions=True)

    assert asyncio.run(main()) == [None, refused, None]
    assert record.writes == [["run-a", "run-b"]]
    assert record.calls == [["s1", "s2"], ["s1"]]
    group.leave()
    assert not group.shared


def test_a_writer_that_raises_refuses_every_member() -> None:
    def broken(owners: Any) -> Any:
        raise StoreError("run store failed: disk full")

    group = StartGroup(broken)

    async def main() -> list[Any]:
        joins = (group.join(o, StepResult("s"), 1) for o in ("a", "b"))
        return await asyncio.gather(*joins, return_exceptions=True)

    assert [str(e) for e in asyncio.run(main())] == ["run store failed: disk full"] * 2


def test_a_refused_write_is_raised_in_every_member() -> None:
    error = StoreError("run store failed: disk full")
    group = StartGroup(Recording(error))

    async def main() -> list[Any]:
        joins = (group.join("run", StepResult(n), 1) for n in ("a", "b"))
        return await asyncio.gather(*joins, return_exceptions=True)

    assert asyncio.run(main()) == [error, error]


@pytest.mark.parametrize("error", [None, AuditError("audit sink refused step_started")])
def test_a_member_cancelled_while_waiting_is_still_written_and_then_cancelled(error) -> None:
    """Its start is durable before the driver records its cancellation (its outcome)."""
    record = Recording(error)
    group = StartGroup(record)

    async def main() -> tuple[BaseException | None, BaseException | None]:
        a = asyncio.ensure_future(group.join("run", StepResult("a"), 1))
        b = asyncio.ensure_future(group.join("run", StepResult("b"), 1))
        await asyncio.sleep(0)  # both joined; the write is due on the next turn
        a.cancel()
        results = await asyncio.gather(a, b, return_exceptions=True)
        return results[0], results[1]

    a_result, b_result = asyncio.run(main())
    assert record.calls == [["a", "b"]]
    if error is None:
        assert isinstance(a_result, asyncio.CancelledError) and b_result is None
    else:  # the start was refused: the member says so rather than "cancelled"
        assert a_result is error and b_result is error


class Refusing(MemorySink):
    """Refuses one event (a full disk): ``kind`` of ``step``."""

    def __init__(self, kind: str, step: str) -> None:
        super().__init__()
        self.kind, self.step = kind, step

    def append(self, event: Any) -> Any:
        if event.kind == self.kind and event.step == self.step:
            raise AuditError(f"audit sink refused {event.kind}: disk full")
        return super().append(event)


FAN = """
from runbook import rollback, step

DONE = []

@step(reversible=True)
async def root():
    DONE.append("root")
    return 0

@rollback(root)
def unroot():
    DONE.append("unroot")
""" + "".join(f"\n@step\nasync def b{i}(root):\n    DONE.append('b{i}')\n" for i in range(4))


@pytest.mark.parametrize(
    ("kind", "step"),
    [("step_started", "b2"), ("step_succeeded", "root")],
    ids=["a grouped start refused", "the held outcome before it refused"],
)
def test_a_refused_grouped_start_runs_no_branch_and_rolls_back(
    tmp_path: Path, kind: str, step: str
) -> None:
    path = tmp_path / "fan.py"
    path.write_text(FAN)
    rb = load(path)
    runner = Runner(
        store=f"memory://grouping-{uuid.uuid4().hex}", audit=[Refusing(kind, step)], locks=None
    )
    result = runner.run(rb)
    assert result.status == "rolled_back"
    assert f"refused {kind}" in (result.error or "")
    assert rb.module.DONE == ["root", "unroot"]  # no branch's effect, root undone
    assert runner.store is not None
    assert runner.store.get_steps(result.run_id)["root"].status == "rolled_back"
