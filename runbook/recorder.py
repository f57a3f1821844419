"""Every durable write of a run (``RunRecorder``): what is written when, the one place for it.

It decides what a transition is (what is held for the next write, what a start carries, what a
run's end writes); ``Media`` (runbook/media.py) writes a transition to the store and the sinks in
the order that keeps a crash recoverable. The audit pipeline the events go through (``Recorder``:
build, redact, store in every sink, tell plugins) is runbook/audit/pipeline.py; both names are
importable from here too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from runbook import result as R
from runbook import trail
from runbook.audit.events import AuditEvent
from runbook.audit.pipeline import HOST as HOST
from runbook.audit.pipeline import Recorder as Recorder
from runbook.errors import AuditError, LockHeld, StoreError
from runbook.media import Held, Media, Part
from runbook.media import error_text as error_text
from runbook.redact import Redactor, stored_output
from runbook.store.base import RunStore, StepRecord

if TYPE_CHECKING:
    from runbook.locks.base import Lease
    from runbook.result import RunResult, StepResult

log = logging.getLogger("runbook")


def _nothing() -> None:
    """A held outcome's ``then`` when it has none."""


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
        self._masks = bool(redactor)  # a Redactor is immutable (``add`` makes another)
        self.on_fatal = on_fatal
        self.seq_of = seq_of
        self.run_options = dict(run_options or {})
        self._lock = threading.RLock()  # one transition at a time (worker threads emit too)
        self.media = Media(audit, self.store)
        self._held: Held | None = None  # an outcome's store part, for the next commit
        self.holds = 0  # how many held writes began (see flush)
        self._trail_noted = False  # the stored run names it (_note_trail)
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
        self.write((), [(kind, step, data, actor)], intent=False)

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
            self.write((), [(kind, step, data, actor)], intent=False, fatal_audit=False)

    def save(self, res: StepResult) -> None:
        """Store one step's rollback state (outputs holding a secret are stored masked and
        marked); stored even when the audit refuses its part: the undo goes on regardless."""
        if self.store is not None:
            self.write((res,), (), intent=True, regardless=True)

    def _record(self, res: StepResult) -> StepRecord:
        output = stored_output(res.output, self.redactor if self._masks else None)
        return StepRecord(
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

    def write(
        self,
        results: Sequence[StepResult],
        events: Sequence[tuple[str, str | None, dict[str, Any] | None, str | None]],
        *,
        intent: bool,
        fatal_audit: bool = True,
        hold: bool = False,
        then: Callable[[], None] | None = None,
        regardless: bool | None = None,
    ) -> None:
        """Record one transition (see above); refused writes are reported through ``on_fatal``
        and raised (``StoreError`` first), after the writes that could still be made.

        ``hold`` (an outcome, from the driver): nothing is written yet. The outcome (and every
        other one held meanwhile: the steps that ended on the same turn of the loop) joins the
        NEXT write: its events in that write's append to the other sinks, made first, its rows
        and the store's part in that write's commit. The next write is normally the next
        steps' starts, so a chain costs one commit per step and a fan-out's round one commit
        for all its outcomes and starts. The driver calls ``flush`` before anything else could
        happen (a lock released, waiting, the loop's next turn), so the outcome is durable
        before any other side effect starts. ``then`` runs once it is durable (its hook).

        ``regardless`` (default: for outcomes, not for intents): the rows are stored even when
        the audit part of the store's write is refused, since what they record has happened (an
        outcome) or goes on anyway (an undo). A start refused there is not acted on, so
        neither its rows nor its events are written (the held outcomes' rows still are).
        """
        audit = self.audit
        built = [audit.build(k, st, d, actor=a) for k, st, d, a in events]
        if regardless is None:
            regardless = not intent
        with self._lock:
            records = [self._record(res) for res in results] if self.store is not None else []
            if hold and self._holds:
                if self._held is None:
                    self.holds += 1
                    self._held = Held(self.holds)
                held = self._held
                held.records += records
                held.built += built
                held.then.append(then or _nothing)
                return
            media = self.media
            joined, separate = media.split()
            if intent and not self._trail_noted:
                error = self._note_trail()
                if error is not None:
                    self.on_fatal(error)
                    raise error
            held, self._held = self._held or Held(0), None
            if intent and built and media.leader is not None:
                published, store_error, audit_error = media.leading(held, records, built, separate)
            else:
                published, store_error, audit_error = media.ordered(
                    held, records, built, joined, separate, intent=intent, regardless=regardless
                )
        thens = held.then if then is None else (*held.then, then)
        self._conclude(published, thens, store_error, audit_error, fatal_audit=fatal_audit)

    def _conclude(
        self,
        published: Sequence[AuditEvent],
        thens: Iterable[Callable[[], None]],
        store_error: StoreError | None,
        audit_error: AuditError | None,
        *,
        fatal_audit: bool = True,
    ) -> None:
        """Once a transition's media are written: tell the listeners, run what waited for it
        to be durable (the held outcomes' hooks), then report and raise what was refused."""
        for event in published:
            self.audit.tell(event)
        if store_error is None:
            for after in thens:
                after()
        if audit_error is not None and fatal_audit:
            self.on_fatal(audit_error)
        if store_error is not None:
            self.on_fatal(store_error)
            raise store_error
        if audit_error is not None:
            raise audit_error

    def _note_trail(self) -> StoreError | None:
        """The stored run names the trail that leads it (or none), before its first start (or
        undo): ``resume`` rolls the store forward from the trail named (runbook.trail), and a
        trail that no longer leads must not be read for steps recorded elsewhere since."""
        leader = self.media.leader
        want = None if leader is None else leader.chain_id
        if self.store is None or self.run_options.get(trail.OPTION) == want:
            self._trail_noted = True
            return None
        options = {k: v for k, v in self.run_options.items() if k != trail.OPTION}
        if want is not None:
            options[trail.OPTION] = want
        try:
            self.store.update_run(self.info.run_id, options=dict(options))
        except Exception as exc:
            return StoreError(f"run store failed: {error_text(exc)}")
        self.run_options, self._trail_noted = options, True
        return None

    def flush(self, upto: int | None = None) -> None:
        """Commit a held outcome now (see ``write``); raises as ``write`` does. ``upto``: only
        one held since hold number ``upto`` or before (a later one has its own flush due)."""
        held = self._held
        if held is not None and (upto is None or held.number <= upto):
            self.write((), (), intent=False)

    @property
    def _holds(self) -> bool:
        """Whether there is a write to hold: every store (the rows and witnesses of two
        transitions then cost one store write, one transaction where the store has them) and,
        with no store, every sink (an outcome's events then share the next start's append, one
        ``fsync`` a transition: with no store there is no write to order them against)."""
        return self.store is not None or bool(self.audit.sinks)

    # -- transitions -----------------------------------------------------------------------------

    def step_started(self, res: StepResult, attempt: int) -> None:
        """Before the step's side effects start: stored as running, then audited."""
        events = () if self.quiet else [("step_started", res.name, {"attempt": attempt}, None)]
        self.write((res,), events, intent=True)
        self.hook("runbook_step_started", step=res.name, attempt=attempt)

    def part_of(self, starts: Sequence[tuple[StepResult, int]]) -> Part:
        """These starts as this run's share of a write with other runs' (``starts_together``),
        with the outcomes held so far; call with ``_lock`` held. Raises as ``write`` does when
        the run cannot say which trail leads it."""
        self.media.split()  # which sink leads, before the run is to name it
        if not self._trail_noted:
            error = self._note_trail()
            if error is not None:
                self.on_fatal(error)
                raise error
        audit = self.audit
        built = (
            []
            if self.quiet
            else [audit.build("step_started", res.name, {"attempt": n}) for res, n in starts]
        )
        records = [self._record(res) for res, _ in starts]
        held, self._held = self._held or Held(0), None
        return Part(self.media, held, records, built)

    def finish(self, part: Part, starts: Sequence[tuple[StepResult, int]]) -> None:
        """After ``write_together``: what ``write`` does once its media are written (publish,
        tell the listeners, the held outcomes' hooks, the errors), then the starts' hooks."""
        audit = self.audit
        held = part.held
        published = audit.first(held.stored, held.built) + audit.first(part.new, part.built)
        with audit._lock:
            audit.events.extend(published)
        self._conclude(published, held.then, part.store_error, part.audit_error)
        for res, attempt in starts:
            self.hook("runbook_step_started", step=res.name, attempt=attempt)

    def steps_started(self, starts: Sequence[tuple[StepResult, int]]) -> None:
        """Steps that start together (``runbook.grouping``): one transition for all of them."""
        events = (
            ()
            if self.quiet
            else [("step_started", res.name, {"attempt": attempt}, None) for res, attempt in starts]
        )
        self.write([res for res, _ in starts], events, intent=True)
        for res, attempt in starts:
            self.hook("runbook_step_started", step=res.name, attempt=attempt)

    def step_finished(
        self,
        res: StepResult,
        event: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        hold: bool = False,
    ) -> None:
        """An outcome: audited, then stored (even when the audit refused it), then the hook.
        ``hold``: the store's part may join the next write (``write``)."""

        def then() -> None:
            self.hook("runbook_step_finished", step=res.name, result=res)

        events = () if self.quiet or event is None else [(event, res.name, data, None)]
        self.write((res,), events, intent=False, hold=hold, then=then)

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
        with contextlib.suppress(StoreError, AuditError):  # reported through on_fatal; undo anyway
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
        events = [
            ("lock_acquired", step, {"lock": lease.name, "fencing_token": lease.token}, None)
            for lease in leases
        ]
        if events and not self.quiet:
            self.write((), events, intent=False)

    def locks_released(self, leases: Iterable[Lease], step: str | None, *, stop: bool) -> None:
        """``stop``: a refused event still fails the run (a step's lock, released mid-run)."""
        events = [
            ("lock_released", step, {"lock": lease.name, "fencing_token": lease.token}, None)
            for lease in leases
        ]
        if not events or (stop and self.quiet):
            return
        with contextlib.suppress(AuditError):
            self.write((), events, intent=False, fatal_audit=stop)

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
        not_started: Sequence[StepResult] = (),
    ) -> None:
        """The end of the run: pause/cancel notes, ``run_finished``, the run row, the hook.

        ``not_started``: steps whose start was refused. They never ran; those the store
        already calls ``running`` (rule 1: a sink refused the ``step_started`` after the commit,
        so the sinks before it may hold it) are ended as an outcome is, ``step_failed`` then the
        ``cancelled`` row, since an ended run has no step running. A start the store refused
        left no row and no event to end."""
        status = result.status
        if not result.dry_run:
            if not_started and self.store is not None:
                self._end_unstarted(not_started)
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

    def _end_unstarted(self, not_started: Sequence[StepResult]) -> None:
        assert self.store is not None
        with contextlib.suppress(Exception):  # the run has ended: nothing left to stop
            rows = self.store.get_steps(self.info.run_id)
            running = [
                res
                for res in not_started
                if res.name in self.media.announced
                or ((row := rows.get(res.name)) is not None and row.status == R.STEP_RUNNING)
            ]
            if running:
                events = [
                    ("step_failed", res.name, {"error": res.reason, "attempt": res.attempts}, None)
                    for res in running
                ]
                self.write(running, () if self.quiet else events, intent=False, fatal_audit=False)

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
