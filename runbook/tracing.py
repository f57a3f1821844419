"""OpenTelemetry spans for runs and step attempts, and the trace context handed onwards.

``opentelemetry-api`` is optional (``pip install runbook[tracing]``): without it every function
here is a cheap no-op, so the engine calls them unconditionally. With it, a run is a span
(``runbook.run``) and every step attempt a child span (``runbook.step``) with the attributes
``runbook.run_id``, ``runbook.step``, ``runbook.env``, ``runbook.attempt`` and, when it ends,
``runbook.status``. Whatever SDK and exporter the process configured receives them; runbook
never configures one itself.

The current span's context travels onwards as W3C trace context: ``traceparent`` on ``http``
requests, ``TRACEPARENT`` in the environment of ``shell`` and ``ssh`` commands, and a field of
an executor's activity input (``inject()`` / ``extract()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

_trace: Any = None  # opentelemetry.trace, when the optional API is installed
_propagate: Any = None
_otel_context: Any = None
try:
    from opentelemetry import context as _otel_context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised by the no-otel install smoke test
    pass

TRACER = "runbook"


def enabled() -> bool:
    """Whether ``opentelemetry-api`` is installed: without it every span here is a no-op."""
    return _trace is not None


class Span:
    """What the engine holds while a run or attempt is open: set its status when it ends."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set_status(self, status: str, error: str | None = None) -> None:
        """Record runbook's status as ``runbook.status``; an ``error`` also marks the span as an
        OpenTelemetry error, so trace backends flag it."""
        if self._span is None:
            return
        self._span.set_attribute("runbook.status", status)
        if error:
            self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, error))

    def set(self, key: str, value: Any) -> None:
        """An attribute; None is skipped (OpenTelemetry refuses it)."""
        if self._span is not None and value is not None:
            self._span.set_attribute(key, value)


@contextlib.contextmanager
def run_span(
    run_id: str, runbook: str, env: str, *, parent: Mapping[str, str] | None = None
) -> Iterator[Span]:
    """A span for one run (or one resumption of it), current while the block runs."""
    with _span(
        "runbook.run",
        {"runbook.run_id": run_id, "runbook.runbook": runbook, "runbook.env": env},
        parent,
    ) as span:
        yield span


class _NoSpan:
    """The attempt span's stand-in when no tracer provider is set: nothing would be recorded."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return _EMPTY

    def __exit__(self, *exc: object) -> None:
        return None


_EMPTY = Span()
_NO_SPAN = _NoSpan()


def attempt_span(
    run_id: str, step: str, env: str, attempt: int
) -> contextlib.AbstractContextManager[Span]:
    """A span for one step attempt, a child of the run span current in this context.

    Until the process sets a tracer provider (an SDK), the API's tracer makes non-recording
    spans that carry the current context unchanged: none is made then, per attempt, since the
    context it would carry is the run span's, current already (``inject`` says the same)."""
    if _trace is None or isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider):
        return _NO_SPAN
    return _span(
        "runbook.step",
        {
            "runbook.run_id": run_id,
            "runbook.step": step,
            "runbook.env": env,
            "runbook.attempt": attempt,
        },
        None,
    )


@contextlib.contextmanager
def _span(
    name: str, attributes: dict[str, Any], parent: Mapping[str, str] | None
) -> Iterator[Span]:
    if _trace is None:
        yield Span()
        return
    ctx = _propagate.extract(dict(parent)) if parent else None
    tracer = _trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        name,
        context=ctx,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield Span(span)


def inject() -> dict[str, str]:
    """The current trace context as W3C headers (``{"traceparent": ...}``), or ``{}``."""
    if _trace is None:
        return {}
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return carrier


def traceparent() -> str | None:
    """The current span's ``traceparent`` value, for an environment variable or a header."""
    return inject().get("traceparent")


def command_env() -> dict[str, str]:
    """Environment variables that pass the trace on to a command (``TRACEPARENT``)."""
    carrier = inject()
    out = {}
    if "traceparent" in carrier:
        out["TRACEPARENT"] = carrier["traceparent"]
    if "tracestate" in carrier:
        out["TRACESTATE"] = carrier["tracestate"]
    return out


@contextlib.contextmanager
def attached(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make a context received from elsewhere (an executor's activity input) current."""
    if _trace is None or not carrier:
        yield
        return
    token = _otel_context.attach(_propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        _otel_context.detach(token)


def add_http_header(request: Any) -> None:
    """An httpx request event hook: adds ``traceparent`` (and ``tracestate``) when tracing."""
    for key, value in inject().items():
        request.headers.setdefault(key, value)
