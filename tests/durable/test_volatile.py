"""A sink that lives in the process (``memory://``, ``volatile``) takes a step's start with the
outcomes held before it, in one append before the store's commit; any other sink still gets the
start only once the store says the step is running (runbook/media.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from runbook import Runner, load
from runbook.audit.events import AuditEvent
from runbook.audit.memory import MemorySink

CHAIN = """
from runbook import step

@step
def a():
    return 1

@step
def b(a):
    return a

@step
def c(b):
    return b
"""


class Watching(MemorySink):
    """Records, for each append, the kinds it was given and what the store said of each
    step it starts at that moment."""

    def __init__(self, volatile: bool) -> None:
        super().__init__()
        self.volatile = volatile
        self.store: Any = None
        self.run_id = ""
        self.appends: list[list[str]] = []
        self.stored_when_started: dict[str, str | None] = {}

    def append_many(self, events: Any) -> list[AuditEvent]:
        self.appends.append([e.kind for e in events])
        for event in events:
            if event.kind == "step_started" and event.step is not None:
                row = self.store.get_steps(event.run_id).get(event.step)
                self.stored_when_started[event.step] = None if row is None else row.status
        return super().append_many(events)


def _run(tmp_path: Path) -> tuple[Watching, Watching, Any]:
    path = tmp_path / "rb.py"
    path.write_text(CHAIN)
    in_process, outside = Watching(volatile=True), Watching(volatile=False)
    runner = Runner(
        store=f"memory://volatile-{uuid.uuid4().hex}", audit=[in_process, outside], locks=None
    )
    in_process.store = outside.store = runner.store
    result = runner.run(load(path))
    assert result.status == "succeeded"
    return in_process, outside, result


def test_a_sink_in_the_process_gets_each_start_with_the_outcomes_in_one_append(
    tmp_path: Path,
) -> None:
    in_process, outside, _ = _run(tmp_path)
    # b's start: a's outcome and b's start together in the in-process sink, apart in the other
    assert ["step_succeeded", "step_started"] in in_process.appends
    assert ["step_succeeded", "step_started"] not in outside.appends
    assert ["step_succeeded"] in outside.appends and ["step_started"] in outside.appends
    assert len(in_process.appends) < len(outside.appends)
    # the same chain of events in both, each verifiable
    assert [e.kind for e in in_process.events()] == [e.kind for e in outside.events()]
    assert in_process.verify().ok and outside.verify().ok


def test_only_the_sink_outside_the_process_waits_for_the_store_to_say_running(
    tmp_path: Path,
) -> None:
    in_process, outside, _ = _run(tmp_path)
    assert outside.stored_when_started == {"a": "running", "b": "running", "c": "running"}
    assert set(in_process.stored_when_started) == {"a", "b", "c"}
    assert "running" not in in_process.stored_when_started.values()  # before the store's commit
