"""Spans and trace-context propagation, through the SDK's in-memory exporter."""

from __future__ import annotations

import re

import httpx

from runbook import tracing

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def test_an_attempt_span_is_a_child_of_its_run_span_with_the_attributes(spans):
    with tracing.run_span("r1", "deploy", "prod") as run:
        with tracing.attempt_span("r1", "stage", "prod", 2) as attempt:
            attempt.set_status("succeeded")
        run.set_status("succeeded")
    step, root = spans.get_finished_spans()
    assert (root.name, step.name) == ("runbook.run", "runbook.step")
    assert step.parent is not None and step.parent.span_id == root.context.span_id
    assert step.context.trace_id == root.context.trace_id
    assert dict(step.attributes) == {
        "runbook.run_id": "r1",
        "runbook.step": "stage",
        "runbook.env": "prod",
        "runbook.attempt": 2,
        "runbook.status": "succeeded",
    }
    assert root.attributes["runbook.runbook"] == "deploy"


def test_a_failed_attempt_has_an_error_status(spans):
    with (
        tracing.run_span("r1", "deploy", "prod"),
        tracing.attempt_span("r1", "switch", "prod", 1) as attempt,
    ):
        attempt.set_status("failed", "AssertionError: health 503")
    step = spans.get_finished_spans()[0]
    assert step.status.status_code.name == "ERROR"
    assert step.status.description == "AssertionError: health 503"


def test_commands_and_requests_receive_the_current_trace(spans):
    assert tracing.command_env() == {} and tracing.traceparent() is None  # nothing current
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        return httpx.Response(200)

    client = httpx.Client(
        transport=httpx.MockTransport(handler), event_hooks={"request": [tracing.add_http_header]}
    )
    with tracing.run_span("r1", "deploy", "prod"), tracing.attempt_span("r1", "stage", "prod", 1):
        env = tracing.command_env()
        client.get("http://127.0.0.1/health")
    step = spans.get_finished_spans()[0]
    assert TRACEPARENT.match(env["TRACEPARENT"])
    assert env["TRACEPARENT"].split("-")[2] == format(step.context.span_id, "016x")
    assert seen["traceparent"] == env["TRACEPARENT"]


def test_a_context_passed_to_another_process_continues_the_same_trace(spans):
    with tracing.run_span("r1", "deploy", "prod"):
        carrier = tracing.inject()  # what an executor sends with an activity
    with tracing.attached(carrier), tracing.attempt_span("r1", "remote", "prod", 1):
        pass
    root, remote = spans.get_finished_spans()
    assert remote.context.trace_id == root.context.trace_id
    assert remote.parent.span_id == root.context.span_id


def test_a_resumed_run_joins_the_trace_it_was_given(spans):
    with tracing.run_span("r1", "deploy", "prod"):
        first = tracing.inject()
    with tracing.run_span("r1", "deploy", "prod", parent=first):
        pass
    first_span, resumed = spans.get_finished_spans()
    assert resumed.context.trace_id == first_span.context.trace_id
