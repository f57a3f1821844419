"""Without a tracer provider (the API installed, no SDK configured), a step attempt makes no span
of its own: the API's would be a non-recording copy of the run's context, made per attempt for
nothing. The trace context a command receives is the same either way. In a child process: the
tests of this folder install an SDK provider for the whole test process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("opentelemetry.trace")

CHILD = """
import json
from opentelemetry import trace
from runbook import tracing

made = []
tracer = trace.get_tracer("runbook")
original = type(tracer).start_as_current_span

def counting(self, name, *args, **kwargs):
    made.append(name)
    return original(self, name, *args, **kwargs)

type(tracer).start_as_current_span = counting
parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
with tracing.attached({"traceparent": parent}):
    with tracing.run_span("r1", "deploy", "dev"):
        with tracing.attempt_span("r1", "stage", "dev", 1) as span:
            span.set_status("succeeded")
            inside = tracing.command_env()
        after = tracing.command_env()
print(json.dumps({"made": made, "inside": inside, "after": after, "parent": parent}))
"""


def test_no_attempt_span_without_a_provider_and_the_same_context_for_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["made"] == ["runbook.run"]  # the run's span only, none per attempt
    assert seen["inside"] == {"TRACEPARENT": seen["parent"]}  # the received trace goes on
    assert seen["after"] == seen["inside"]
