"""A remote command joins the step's trace: ``TRACEPARENT`` on the host is the step span's.

The commands run on the plugin's own event-loop thread, where the step's OpenTelemetry context
is not current; the trace context is read where the step calls ``ssh`` and carried across.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_ssh import run, write

pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

pytestmark = pytest.mark.slow


_EXPORTER = InMemorySpanExporter()
_INSTALLED: list[bool] = []


@pytest.fixture
def spans():
    """The process's SDK provider (installed here if no other test did) feeding one exporter."""
    if not _INSTALLED:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        _INSTALLED.append(True)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def test_a_remote_command_sees_its_step_span_as_traceparent(project: Path, fleet, spans) -> None:
    path = write(
        project,
        fleet,
        """
        @step
        def sync_call(ssh):
            return ssh("web-1", ["sh", "-c", 'echo "$TRACEPARENT"']).stdout.strip()

        @step
        async def async_call(ssh):
            return (await ssh.arun("web-2", ["sh", "-c", 'echo "$TRACEPARENT"'])).stdout.strip()
        """,
    )
    result = run(project, path)
    assert result.status == "succeeded", result.error
    steps = {
        s.attributes["runbook.step"]: s
        for s in spans.get_finished_spans()
        if s.name == "runbook.step"
    }
    for name in ("sync_call", "async_call"):
        _version, trace_id, span_id, _flags = result.steps[name].output.split("-")
        assert trace_id == format(steps[name].context.trace_id, "032x")
        assert span_id == format(steps[name].context.span_id, "016x")
