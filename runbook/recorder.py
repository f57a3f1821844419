"""Recording a run: the audit pipeline (``Recorder``) and every durable write (``RunRecorder``).

``Recorder`` builds an event, redacts it, stores it in every sink, then tells plugins. A required
sink that fails raises ``AuditError``: the engine treats that as a failure of the run
and stops before the next side effect. A ``best_effort`` sink's failure is reported once (as a
warning on the ``runbook`` logger) and the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from runbook import result as R
from runbook.audit.events import AuditEvent, AuditSink
from runbook.clock import Clock
from runbook.context import RunInfo
from runbook.coordinator import REDACTED_KEY, is_redacted
from runbook.errors import AuditError, LockHeld, StoreError
from runbook.redact import Redactor
from runbook.store.base import RunStore, StepRecord

if TYPE_CHECKING:
    from runbook.locks.base import Lease
    from runbook.result import RunResult, StepResult

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


def error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RunRecorder:
    """Every durable write of one run, and the lifecycle hooks: the one place for write order.

    A transition is recorded as: the store row first (the state ``resume`` decides from), then the
    audit event, then the plugin hook. Both writes happen before the driver takes the next side
    effect; a refused write (``StoreError``, ``AuditError``) is reported through ``on_fatal`` and
    raised, so the run stops and rolls back instead of going on unrecorded.
    """

    def __init__(
        self,
        audit: Recorder,
        store: RunStore | None,
        *,
        hook: Any,
        hooks_wanted: frozenset[str],
        redactor: Redactor,
        dry_run: bool = False,
        on_fatal: Callable[[BaseException], None] = lambda exc: None,
        seq_of: Callable[[str], int | None] = lambda name: None,
        run_options: dict[str, Any] | None = None,
    ) -> None:
        self.audit = audit
        self.store = None if dry_run else store
        self.info = audit.info
        self._hook_relay = hook
        self._want = hooks_wanted
        self.redactor = redactor
        self.on_fatal = on_fatal
        self.seq_of = seq_of
        self.run_options = dict(run_options or {})
        # Nothing listens (no sink, no hook, no notifier): skip building events at all.
        self.quiet = not audit.sinks and not audit.listeners

    # -- primitives ------------------------------------------------------------------------------

    def hook(self, name: str, **kwargs: Any) -> None:
        if name in self._want:
            try:
                getattr(self._hook_relay, name)(run=self.info, **kwargs)
            except Exception:  # a broken plugin hook must not break the run
                log.exception("hook %s failed", name)

    def emit(
        self,
        kind: str,
        step: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        """Audit an event; a refused required sink makes the run fail before its next effect."""
        if self.quiet:
            return
        try:
            self.audit.emit(kind, step, data, actor=actor)
        except AuditError as exc:
            self.on_fatal(exc)
            raise

    def note(
        self,
        kind: str,
        step: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        """An event recorded after the decision it reports (rollback, end of run): a refused sink
        cannot stop anything any more, so it is not raised."""
        with contextlib.suppress(AuditError):
            self.audit.emit(kind, step, data, actor=actor)

    def save(self, res: StepResult) -> None:
        """Store one step's state (outputs holding a secret are stored masked and marked)."""
        store = self.store
        if store is None:
            return
        output = res.output
        if self.redactor and output is not None and not is_redacted(output):
            masked = self.redactor(output)
            if masked != output:  # a secret is never stored: mark the output as incomplete
                output = {REDACTED_KEY: True, "value": masked}
        try:
            store.save_step(
                StepRecord(
                    run_id=self.info.run_id,
                    name=res.name,
                    status=res.status,
                    output=output,
                    error=res.error,
                    attempts=res.attempts,
                    started_at=res.started_at,
                    finished_at=res.finished_at,
                    duration=res.duration,
                    reason=res.reason,
                    completed_seq=self.seq_of(res.name),
                    rollback=res.rollback,
                )
            )
        except Exception as exc:
            err = (
                exc
                if isinstance(exc, StoreError)
                else StoreError(f"run store failed: {error_text(exc)}")
            )
            self.on_fatal(err)
            raise err from None

    # -- transitions -----------------------------------------------------------------------------
    #
    # The order of the two writes is what makes every crash point recoverable. Intent goes to the
    # store first ("running"), so that a step whose ``step_started`` is in the audit is always
    # found running by ``resume`` (which records ``step_interrupted`` and decides). An outcome goes
    # to the audit first, then to the store, so that the store never holds an outcome the audit
    # lacks: dying in between leaves the step "running" in the store, which resume treats as
    # interrupted, never as silently done.

    def step_started(self, res: StepResult, attempt: int) -> None:
        """Before the step's side effects start: stored as running, then audited."""
        self.save(res)
        self.emit("step_started", res.name, {"attempt": attempt})
        self.hook("runbook_step_started", step=res.name, attempt=attempt)

    def step_finished(
        self, res: StepResult, event: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        """An outcome: audited, then stored (even when the audit refused it), then the hook."""
        try:
            if event:
                self.emit(event, res.name, data)
        finally:
            self.save(res)
        self.hook("runbook_step_finished", step=res.name, result=res)

    def step_interrupted(self, res: StepResult, decision: str, *, rollback: bool) -> None:
        """Resume found the step (or its rollback) running in the store: say what it decided."""
        data: dict[str, Any] = {"decision": decision, "attempt": res.attempts}
        if rollback:
            data["rollback"] = True
        self.emit("step_interrupted", res.name, data)

    def rollback_begun(self, cause: str, error: str | None) -> None:
        """Before the first undo: the run is rolling back, durably, so a resume goes on with it."""
        if self.store is None or self.run_options.get("rollback") == cause:
            return
        self.run_options["rollback"] = cause
        try:
            self.store.update_run(self.info.run_id, options=dict(self.run_options), error=error)
        except Exception as exc:
            err = StoreError(f"run store failed: {error_text(exc)}")
            self.on_fatal(err)
            raise err from None

    def rollback_started(self, res: StepResult) -> None:
        """Before the undo's side effects: stored as rolling back, then audited."""
        with contextlib.suppress(StoreError):  # reported through on_fatal; the undo goes on
            self.save(res)
        self.note("rollback_started", res.name, {"after": res.status})

    def rollback_finished(self, res: StepResult) -> None:
        if res.rollback == R.STEP_ROLLED_BACK:
            self.note("rollback_succeeded", res.name, {})
        else:
            self.note("rollback_failed", res.name, {"error": res.rollback_error})
        with contextlib.suppress(Exception):
            self.save(res)
        self.hook("runbook_rollback_finished", step=res.name, result=res)

    def locks_acquired(self, leases: Iterable[Lease], step: str | None) -> None:
        for lease in leases:
            self.emit("lock_acquired", step, {"lock": lease.name, "fencing_token": lease.token})

    def locks_released(self, leases: Iterable[Lease], step: str | None, *, stop: bool) -> None:
        """``stop``: a refused event still fails the run (a step's lock, released mid-run)."""
        for lease in leases:
            data = {"lock": lease.name, "fencing_token": lease.token}
            if stop:
                with contextlib.suppress(AuditError):
                    self.emit("lock_released", step, data)
            else:
                self.note("lock_released", step, data)

    def lock_denied(self, exc: LockHeld, step: str | None) -> None:
        with contextlib.suppress(AuditError):
            self.emit(
                "lock_denied",
                step,
                {
                    "lock": exc.name,
                    "holder": exc.holder,
                    "holder_actor": exc.actor,
                    "since": exc.since,
                },
            )

    def run_finished(
        self,
        result: RunResult,
        *,
        resumed_by: str | None,
        settle_data: dict[str, Any] | None = None,
    ) -> None:
        """The end of the run: pause/cancel notes, ``run_finished``, the run row, the hook."""
        status = result.status
        if not result.dry_run:
            if status == R.PAUSED:
                awaiting = [n for n, r in result.steps.items() if r.status == R.AWAITING_APPROVAL]
                self.note("run_paused", None, {"awaiting": awaiting})
            if status == R.CANCELLED:
                self.note(
                    "run_cancelled",
                    None,
                    {"cancelled_by": resumed_by or self.info.actor, **(settle_data or {})},
                    actor=resumed_by,
                )
            self.note(
                "run_finished",
                None,
                {
                    "status": status,
                    "error": result.error,
                    "duration_ms": round((result.duration or 0) * 1000, 3),
                },
            )
            if self.store is not None:
                with contextlib.suppress(Exception):
                    self.store.update_run(self.info.run_id, status=status, error=result.error)
        self.hook("runbook_run_finished", result=result)

    def run_refused(self, exc: LockHeld, *, still_waiting: bool) -> None:
        """A lock refused the run before anything ran: leave a stored run that says so."""
        if self.store is None:
            return
        with contextlib.suppress(Exception):
            if not self.info.resumed:
                self.store.update_run(self.info.run_id, status=R.FAILED, error=str(exc))
                self.audit.emit("run_finished", None, {"status": R.FAILED, "error": str(exc)})
            elif still_waiting:  # still waiting for its gate: resumable as it was
                self.store.update_run(self.info.run_id, status=R.PAUSED)
