"""The run's audit pipeline: build an event, redact it, store it in every sink, then tell plugins.

A required sink that fails raises ``AuditError``: the engine treats that as a failure of the run
and stops before the next side effect. A ``best_effort`` sink's failure is reported once (as a
warning on the ``runbook`` logger) and the run goes on.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from runbook.audit.events import AuditEvent, AuditSink
from runbook.clock import Clock
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
        self.redact = redactor
        self.listeners = list(listeners)
        self.events: list[AuditEvent] = []
        self._runbook = {"path": info.runbook, "sha256": info.sha256}
        self._params = info.params
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def emit(
        self,
        kind: str,
        step: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> AuditEvent:
        """Record one event in every sink; raise ``AuditError`` if a required sink refused it."""
        event = AuditEvent(
            kind=kind,
            run_id=self.info.run_id,
            runbook=self._runbook,
            step=step,
            actor=actor or self.info.actor,
            host=HOST,
            env=self.info.env,
            at=self.clock.now().isoformat(),
            params=self._params,
            data=self.redact.fields(data) if data and self.redact else (data or {}),
        )
        stored = event
        failure: AuditError | None = None
        with self._lock:
            first = True
            for sink in self.sinks:
                try:
                    written = sink.append(event)
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
                    continue
                if first:
                    stored, first = written, False
            self.events.append(stored)
        if failure:
            raise failure
        for listener in self.listeners:
            try:
                listener(stored)
            except Exception:  # a listener (notifier, hook) must never break the audit path
                log.exception("audit listener failed on %s", kind)
        return stored
