"""Unit-test doubles for driving a StepGroup without the engine: a clock, ctx, injector and a tiny
sequential runner with the engine's rollback rule (succeeded reversible steps, newest first)."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runbook.groups import StepGroup
from runbook.testing.router import FakeRouter

T0 = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


class StepClock:
    """Sleeps advance time instantly and are recorded."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


class RecordingCtx:
    def __init__(self) -> None:
        self.progress_calls: list[tuple[str, float | None]] = []
        self.changes: list[tuple[str, Any, Any]] = []

    def progress(self, message: str, fraction: float | None = None) -> None:
        self.progress_calls.append((message, fraction))

    def record_change(self, target: str, before: Any, after: Any) -> None:
        self.changes.append((target, before, after))


class Injector:
    """extra names first, then ``values`` (resources), then defaults: the engine's order."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self.values = values or {}

    def _kwargs(self, fn: Any, extra: dict[str, Any]) -> dict[str, Any]:
        kwargs = {}
        for name, p in inspect.signature(fn).parameters.items():
            if name in extra:
                kwargs[name] = extra[name]
            elif name in self.values:
                kwargs[name] = self.values[name]
            elif p.default is inspect.Parameter.empty:
                raise TypeError(f"nothing to inject for {name!r}")
        return kwargs

    def call(self, fn: Any, **extra: Any) -> Any:
        return fn(**self._kwargs(fn, extra))

    async def acall(self, fn: Any, **extra: Any) -> Any:
        # The real injector runs sync callbacks in a worker thread; inline is enough here and
        # keeps coverage tracing intact (Python 3.11 loses it after an exception crosses
        # asyncio.to_thread).
        result = fn(**self._kwargs(fn, extra))
        return await result if inspect.isawaitable(result) else result


@dataclass
class Drive:
    statuses: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # steps run, then "undo:<step>"

    @property
    def status(self) -> str:
        if "rollback_failed" in self.statuses.values():
            return "rollback_failed"
        if self.errors:
            return "failed"
        return "succeeded"


def _call(fn: Any, resources: dict[str, Any], **more: Any) -> Any:
    names = inspect.signature(fn).parameters
    kwargs = {n: ({**resources, **more})[n] for n in names if n in {**resources, **more}}
    return asyncio.run(fn(**kwargs)) if inspect.iscoroutinefunction(fn) else fn(**kwargs)


def _undo(step: Any, result: Drive, resources: dict[str, Any]) -> None:
    result.order.append(f"undo:{step.name}")
    try:
        _call(step.rollback, resources, output=result.outputs.get(step.name))
        result.statuses[step.name] = "rolled_back"
    except Exception as exc:
        result.statuses[step.name] = "rollback_failed"
        result.errors[step.name] = str(exc)


def drive(group: StepGroup, resources: dict[str, Any]) -> Drive:
    """Run the group's chain in order; on a required failure, roll back like the engine: the
    failed step's own rollback first (``output=None``), then succeeded reversible steps, newest
    first."""
    result = Drive()
    done: list[Any] = []
    for index, step in enumerate(group.steps):
        assert step.after == ((group.steps[index - 1].name,) if index else ())
        result.order.append(step.name)
        try:
            # Like the engine: a group step gets its siblings' outputs by local name.
            siblings = {n.replace("-", "_"): out for n, out in result.outputs.items()}
            result.outputs[step.name] = _call(step.func, resources, **siblings)
        except Exception as exc:
            result.statuses[step.name] = "failed"
            result.errors[step.name] = str(exc)
            if not step.options.required:
                continue
            if step.rollback is not None:
                _undo(step, result, resources)
            for prev in reversed(done):
                if prev.options.reversible:
                    _undo(prev, result, resources)
            return result
        result.statuses[step.name] = "succeeded"
        done.append(step)
    return result


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def ctx() -> RecordingCtx:
    return RecordingCtx()


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter({"web": {"stable": 100}})


@pytest.fixture
def resources(router: FakeRouter, clock: StepClock, ctx: RecordingCtx) -> dict[str, Any]:
    """What the engine would inject into group steps; ``injector`` sees the same names."""
    values: dict[str, Any] = {"router": router, "clock": clock, "ctx": ctx, "calls": []}
    values["injector"] = Injector(values)
    return values


@pytest.fixture
def run_group() -> Any:
    return drive
