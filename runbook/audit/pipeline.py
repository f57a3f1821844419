"""The audit pipeline of one run: build an event, redact it, store it in every sink, tell plugins.

A required sink that fails raises ``AuditError``: the engine treats that as a failure of the run
and stops before the next side effect. A ``best_effort`` sink's failure is reported once (as a
warning on the ``runbook`` logger) and the run goes on. ``RunRecorder`` (runbook/recorder.py)
decides what is written when; this module only says how an event reaches the sinks.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from runbook.audit.canonical import canonical_json
from runbook.audit.events import AuditEvent, AuditSink, event_frame
from runbook.clock import Clock, stamper
from runbook.context import RunInfo
from runbook.errors import AuditError
from runbook.redact import Redactor

log = logging.getLogger("runbook")
HOST = socket.gethostname()


class Recorder:
    def __init__(
        self,
        info: RunInfo,
        sinks: Sequence[AuditSink],
        *,
        clock: Clock,
        redactor: Redactor,
        listeners: Sequence[Callable[[AuditEvent], None]] = (),
    ) -> None:
        self.info = info
        self.sinks = list(sinks)
        self.clock = clock
        self._stamp = stamper(clock)  # each event's ``at``
        self.redact = redactor
        self._masks = bool(redactor)  # a Redactor is immutable (``add`` makes another)
        self.listeners = list(listeners)
        self.events: list[AuditEvent] = []
        self._runbook = {"path": info.runbook, "sha256": info.sha256}
        self._params = info.params
        # The same in every event of the run: serialised once (AuditEvent.with_texts).
        try:
            self._texts = {
                "runbook": canonical_json(self._runbook),
                "params": canonical_json(self._params),
                "run_id": canonical_json(info.run_id),
                "host": canonical_json(HOST),
                "env": canonical_json(info.env),
            }
        except ValueError:  # a non-finite float: left to AuditEvent.chained's fallback
            self._texts = {}
        # ... and the run's actor, in the events it is the actor of (most of them).
        self._texts_actor = {**self._texts, "actor": canonical_json(info.actor)}
        self._frame = event_frame(self._texts_actor)  # and the text around them, once
        # What every event of the run holds, copied per event (``build``): a dict's copy is
        # cheaper than a literal that looks each value up again.
        self._common: dict[str, Any] = {
            "kind": "",
            "run_id": info.run_id,
            "runbook": self._runbook,
            "step": None,
            "actor": info.actor,
            "host": HOST,
            "env": info.env,
            "at": "",
            "params": self._params,
            "data": None,
            "seq": None,
            "prev_hash": None,
            "hash": None,
            "_draft": True,  # this pipeline's own: a sink that keeps it may stamp it itself
        }
        if self._texts:  # AuditEvent.with_texts, without the call
            self._common["_texts"], self._common["_frame"] = self._texts_actor, self._frame
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def build(
        self,
        kind: str,
        step: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> AuditEvent:
        """The event as the run says it, redacted, not yet chained by any sink."""
        values = self._common.copy()
        values["kind"], values["step"] = kind, step
        values["at"] = self._stamp()
        values["data"] = self.redact.fields(data) if data and self._masks else (data or {})
        if actor and actor != self.info.actor:
            values["actor"] = actor
            values["_texts"] = self._texts  # the run's texts, not its actor's ({}: none)
            values.pop("_frame", None)
        return AuditEvent.of(values)

    def emit(
        self,
        kind: str,
        step: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> AuditEvent:
        """Record one event in every sink; raise ``AuditError`` if a required sink refused it."""
        event = self.build(kind, step, data, actor=actor)
        with self._lock:
            stored: dict[int, list[AuditEvent]] = {}
            failure = self.append(list(enumerate(self.sinks)), [event], stored, batch=False)
            (published,) = self.first(stored, [event])
            self.events.append(published)
        if failure:
            raise failure
        self.tell(published)
        return published

    def append(
        self,
        sinks: Sequence[tuple[int, Any]],
        events: Sequence[AuditEvent],
        stored: dict[int, list[AuditEvent]],
        conn: Any = None,
        *,
        batch: bool = True,
    ) -> AuditError | None:
        """Store ``events`` in each ``(index, sink)`` (one write each where the sink batches),
        filling ``stored``; the first required sink's refusal is returned, not raised, so every
        sink is tried. A best-effort sink's failure is a warning, once per sink.

        ``batch=False``: ``append`` per event, which also witnesses each one in the store at
        once (``AuditLog.append``); batches leave the witness to the caller's next store write.
        """
        failure: AuditError | None = None
        if not events:
            return None
        for index, sink in sinks:
            try:
                many = getattr(sink, "append_many", None) if batch else None
                if conn is not None:
                    stored[index] = list(sink.append_many(events, conn))
                elif many is not None:
                    got = many(events)
                    stored[index] = got if type(got) is list else list(got)
                else:
                    stored[index] = [sink.append(event) for event in events]
            except Exception as exc:
                text = self.redact.text(
                    str(exc)
                    if isinstance(exc, AuditError)
                    else f"audit sink {sink.url} failed: {type(exc).__name__}: {exc}"
                )
                if sink.best_effort:
                    if sink.url not in self._warned:
                        self._warned.add(sink.url)
                        log.warning("best-effort: %s", text)
                    continue
                failure = failure or AuditError(text)
        return failure

    def first(
        self, stored: dict[int, list[AuditEvent]], events: Sequence[AuditEvent]
    ) -> list[AuditEvent]:
        """The events as the first sink (in configured order) that took them stored them."""
        for index in sorted(stored):
            if len(stored[index]) == len(events):
                return stored[index]
        return list(events)

    def tell(self, event: AuditEvent) -> None:
        """The listeners (notifiers, the ``runbook_event`` hook), once the event is stored."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener (notifier, hook) must never break the audit path
                log.exception("audit listener failed on %s", event.kind)
