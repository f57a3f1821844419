"""Trace context into Temporal activities: a step attempt run by a worker is a child span of
the run span of the process that started the run, and its commands carry that step's context.

The worker runs in this test's process (same Temporal dev server, store and audit as the other
tests), so the OpenTelemetry SDK's in-memory exporter sees the spans of both sides.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]

TRACED = """
from runbook import step


@step
def stage(shell):
    return shell(["sh", "-c", "echo $TRACEPARENT"]).stdout.strip()


@step(retries=1, backoff=0.01)
def switch(stage):
    import pathlib
    marker = pathlib.Path(__file__).with_name("tried")
    if not marker.exists():
        marker.write_text("once")
        raise RuntimeError("router busy")
    return "switched"
"""


@pytest.fixture
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_attempts_on_a_worker_are_children_of_the_run_span(
    project: Any, spans: InMemorySpanExporter
) -> None:
    from runbook_temporal.runtime import WorkerRuns
    from runbook_temporal.url import TemporalURL
    from runbook_temporal.worker import connect, workers

    from runbook.cli.common import load_config
    from runbook.runner import Runner

    path = project.runbook("traced", TRACED)
    config = load_config(project.root, project.config)
    url = TemporalURL.parse(project.executor)

    async def scenario() -> Any:
        with (
            Runner.from_config(config, entry_points=True) as served,
            Runner.from_config(
                config, actor="alice", executor=project.executor, entry_points=True
            ) as user,
        ):
            running = workers(await connect(url), url, WorkerRuns(served, project.root), [])
            tasks = [asyncio.ensure_future(w.run()) for w in running]
            try:
                return await asyncio.wait_for(user.arun(path), 60)
            finally:
                for w in running:
                    await w.shutdown()
                await asyncio.gather(*tasks, return_exceptions=True)

    result = asyncio.run(scenario())
    assert result.status == "succeeded", result

    finished = spans.get_finished_spans()
    (run,) = [s for s in finished if s.name == "runbook.run"]
    steps = [s for s in finished if s.name == "runbook.step"]
    attrs = {s: dict(s.attributes or {}) for s in [run, *steps]}
    run_ctx = run.get_span_context()
    assert run_ctx is not None
    assert attrs[run]["runbook.run_id"] == result.run_id
    assert attrs[run]["runbook.status"] == "succeeded"
    assert all(s.parent is not None and s.parent.span_id == run_ctx.span_id for s in steps)
    assert all(getattr(s.get_span_context(), "trace_id", None) == run_ctx.trace_id for s in steps)
    assert sorted(
        (
            attrs[s]["runbook.step"],
            attrs[s]["runbook.attempt"],
            attrs[s]["runbook.status"],
        )
        for s in steps
    ) == [("stage", 1, "succeeded"), ("switch", 1, "failed"), ("switch", 2, "succeeded")]
    (stage,) = [s for s in steps if attrs[s]["runbook.step"] == "stage"]
    stage_ctx = stage.get_span_context()
    assert stage_ctx is not None
    traceparent = result.steps["stage"].output
    assert traceparent.split("-")[1] == format(run_ctx.trace_id, "032x")
    assert traceparent.split("-")[2] == format(stage_ctx.span_id, "016x")
