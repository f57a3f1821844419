"""Every durable write of a run (``RunRecorder``): the one place that decides write order.

The audit pipeline it writes events through (``Recorder``: build, redact, store in every sink,
tell plugins) is runbook/audit/pipeline.py; both names are importable from here too.
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
from runbook.coordinator import REDACTED_KEY, is_redacted
from runbook.errors import AuditError, LockHeld, StoreError
from runbook.redact import Redactor
from runbook.store.base import RunStore, StepRecord, save_steps

if TYPE_CHECKING:
    from runbook.locks.base import Lease
    from runbook.result import RunResult, StepResult

log = logging.getLogger("runbook")


class _Held:
    """Outcomes waiting for the next write, which makes them durable (``RunRecorder.write``).

    A plain class: one is made per chain step, and a dataclass's default factories cost more
    than the rest of holding."""

    __slots__ = ("built", "number", "records", "stored", "then")

    def __init__(self, number: int) -> None:
        self.number = number  # RunRecorder.holds when it began
        self.records: list[StepRecord] = []
        self.built: list[AuditEvent] = []
        self.stored: dict[int, list[AuditEvent]] = {}  # by each sink, once written
        self.then: list[Callable[[], None] | None] = []  # each one's ``then``


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
        self._lock = threading.RLock()  # one transition at a time (worker threads emit too)
        self._sinks: tuple[list[tuple[int, Any]], list[tuple[int, Any]]] | None = None
        self._held: _Held | None = None  # an outcome's store part, for the next commit
        self.holds = 0  # how many held writes began (see flush)
        self._leader: Any = None  # the sink that leads the store (runbook.trail), from _split
        self._trail_noted = False  # the stored run names it (_note_trail)
        # Steps whose ``step_started`` a sink holds but whose start was refused: ended with the
        # run (``_end_unstarted``), as the store has no ``running`` row for them.
        self._announced: set[str] = set()
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
        output = res.output
        if self.redactor and output is not None and not is_redacted(output):
            masked = self.redactor(output)
            if masked != output:  # a secret is never stored: mark the output as incomplete
                output = {REDACTED_KEY: True, "value": masked}
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

    # -- one durable write per transition --------------------------------------------------------
    #
    # A transition is the step rows it changes plus the audit events that report it, written as
    # ONE durable write per medium: the store rows, the events of every sink that lives in the
    # store's own SQLite file, and the store's witness of each sink's last event share one
    # transaction (one commit); every other sink gets all the events in one append (one fsync).
    # Outcomes held on one turn of the loop and the starts of steps launched together
    # (runbook.grouping) are one transition too, however many steps they are.
    #
    # Between media the order is what makes every crash point recoverable. Intent (``intent``:
    # a step about to start) goes to the store first ("running"), so that a step whose
    # ``step_started`` is in the audit is always found running by ``resume`` (which records
    # ``step_interrupted`` and decides). An outcome goes to the other sinks first, then to the
    # store, so that the store never holds an outcome the audit lacks: dying in between leaves
    # the step "running" in the store, which resume treats as interrupted, never as silently
    # done. Within the shared transaction there is no order: it commits entirely or not at all.
    #
    # When a synced JSONL trail leads the store (runbook.trail), a start is instead ONE append of
    # the held outcomes and the starts, then the store's commit without a WAL sync (``_leading``):
    # the store never holds more than the trail, and ``resume`` rolls forward what it lacks.

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
                    self._held = _Held(self.holds)
                held = self._held
                held.records += records
                held.built += built
                held.then.append(then)
                return
            joined, separate = self._split()
            if intent and not self._trail_noted:
                error = self._note_trail()
                if error is not None:
                    self.on_fatal(error)
                    raise error
            held, self._held = self._held or _Held(0), None
            if intent and built and self._leader is not None:
                published, store_error, audit_error = self._leading(held, records, built, separate)
            else:
                published, store_error, audit_error = self._ordered(
                    held, records, built, joined, separate, intent=intent, regardless=regardless
                )
        for event in published:
            audit.tell(event)
        if store_error is None:
            for after in (*held.then, then):
                if after is not None:
                    after()
        if audit_error is not None and fatal_audit:
            self.on_fatal(audit_error)
        if store_error is not None:
            self.on_fatal(store_error)
            raise store_error
        if audit_error is not None:
            raise audit_error

    def _ordered(
        self,
        held: _Held,
        records: list[StepRecord],
        built: list[AuditEvent],
        joined: list[tuple[int, Any]],
        separate: list[tuple[int, Any]],
        *,
        intent: bool,
        regardless: bool,
    ) -> tuple[list[AuditEvent], StoreError | None, AuditError | None]:
        """A transition in the two rules' order: the held outcomes (and an outcome's own events)
        to the other sinks, the store's commit, then a start's events to the other sinks."""
        audit = self.audit
        done = len(held.built)
        # The other sinks first get the held outcomes' events (and an outcome's own: one
        # append); a start's events wait for the store, below.
        stored: dict[int, list[AuditEvent]] = {}
        first = held.built if intent else held.built + built
        audit_error = audit.append(separate, first, stored)
        if intent and audit_error is not None:  # outcomes refused: nothing starts after them
            records, built = [], []  # (their rows are still stored)
        joined_stored: dict[int, list[AuditEvent]] = {}
        alone = held.records + (records if regardless else [])  # if the audit part is refused
        # Only witnesses of events the leading trail has synced: losing them to a power cut
        # leaves a witness behind the trail, which is harmless (runbook.audit.log).
        witnesses_only = self._leader is not None and not held.records and not records
        store_error, joined_error = self._commit(
            held.records + records,
            held.built + built,
            joined,
            joined_stored,
            alone,
            sync=not witnesses_only,
        )
        new: dict[int, list[AuditEvent]] = {}
        if stored or joined_stored:
            for index, events_stored in [*stored.items(), *joined_stored.items()]:
                held.stored[index] = events_stored[:done]
                new[index] = events_stored[done:]
        audit_error = audit_error or joined_error
        # The store says running (its audit part was not refused): audit the start.
        if intent and store_error is None and joined_error is None and built:
            for index, _ in separate:
                new.pop(index, None)
            audit_error = audit.append(separate, built, new) or audit_error
        published = audit.first(held.stored, held.built) + audit.first(new, built)
        with audit._lock:
            audit.events.extend(published)
        return published, store_error, audit_error

    def _leading(
        self,
        held: _Held,
        records: list[StepRecord],
        built: list[AuditEvent],
        separate: list[tuple[int, Any]],
    ) -> tuple[list[AuditEvent], StoreError | None, AuditError | None]:
        """A start when the trail leads (runbook.trail): the held outcomes' events and the
        starts' in ONE synced append, then the store's commit without a WAL sync.

        A sink that refused the append: nothing starts; the held outcomes' rows are stored
        (synced: the leader may lack their events), and steps whose ``step_started`` a sink
        took are ended at the run's end (``_end_unstarted``). A refused commit: the trail holds
        the starts, so they are ended the same way."""
        audit = self.audit
        done = len(held.built)
        stored: dict[int, list[AuditEvent]] = {}
        audit_error = audit.append(separate, held.built + built, stored)
        names = [record.name for record in records]
        if audit_error is None:
            store_error, _ = self._commit(held.records + records, [], [], {}, [], sync=False)
            if store_error is not None:
                self._announced.update(names)
        else:
            if any(len(events) > done for events in stored.values()):
                self._announced.update(names)
            store_error, _ = self._commit(held.records, [], [], {}, [])
        new: dict[int, list[AuditEvent]] = {}
        for index, events_stored in stored.items():
            held.stored[index] = events_stored[:done]
            new[index] = events_stored[done:]
        published = audit.first(held.stored, held.built) + audit.first(new, built)
        with audit._lock:
            audit.events.extend(published)
        return published, store_error, audit_error

    def _note_trail(self) -> StoreError | None:
        """The stored run names the trail that leads it (or none), before its first start (or
        undo): ``resume`` rolls the store forward from the trail named (runbook.trail), and a
        trail that no longer leads must not be read for steps recorded elsewhere since."""
        want = None if self._leader is None else self._leader.chain_id
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
        """Whether there is a store part to hold (every store: the rows and witnesses of two
        transitions then cost one store write, one transaction where the store has them)."""
        return self.store is not None

    def _split(self) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
        """(joined, separate): the sinks writing inside the store's transactions, the others."""
        if self._sinks is None:
            joined: list[tuple[int, Any]] = []
            separate: list[tuple[int, Any]] = []
            for index, sink in enumerate(self.audit.sinks):
                joins = getattr(sink, "joins", None)
                if self.store is not None and joins is not None and joins(self.store):
                    try:
                        getattr(sink, "prepare", lambda: None)()  # table made outside any tx
                    except Exception:  # written on its own then, and failing there
                        separate.append((index, sink))
                        continue
                    joined.append((index, sink))
                else:
                    separate.append((index, sink))
            self._sinks = (joined, separate)
            if not joined and separate:
                self._leader = trail.leader(self.store, [sink for _, sink in separate])
        return self._sinks

    def _commit(
        self,
        records: list[StepRecord],
        built: list[AuditEvent],
        joined: list[tuple[int, Any]],
        stored: dict[int, list[AuditEvent]],
        alone: list[StepRecord],
        *,
        sync: bool = True,
    ) -> tuple[StoreError | None, AuditError | None]:
        """The store's part of a transition in one transaction: rows, joined sinks' events, the
        witnesses due. A refused audit part is rolled back and the rows in ``alone`` written on
        their own (an outcome is stored even when the audit refused it; a start is not). A store
        without transactions writes the witnesses first: when one is refused no row has been
        written yet, and only those in ``alone`` are. ``sync=False``: committed without a WAL
        sync, for what the leading trail already holds (runbook.trail)."""
        store = self.store
        if store is None:
            return None, None
        logs = [sink for sink in self.audit.sinks if getattr(sink, "pending", None)]
        if not records and not (joined and built) and not logs:
            return None, None
        transaction = getattr(store, "transaction", None)
        audit_error: AuditError | None = None
        try:
            try:
                if transaction is None:
                    self._witnesses(store, logs)
                    self._rows(store, records)
                else:
                    relaxed = {} if sync else {"sync": False}
                    with transaction("record a step in", **relaxed) as conn:
                        self._rows(store, records)
                        if joined and built:
                            joined_error = self.audit.append(joined, built, stored, conn)
                            if joined_error is not None:
                                raise joined_error
                        self._witnesses(store, logs)
            except AuditError as exc:  # rolled back: the rows that stand anyway, on their own
                audit_error = exc
                for index, _ in joined:
                    stored.pop(index, None)
                if alone:
                    if transaction is None:
                        self._rows(store, alone)
                    else:
                        with transaction("record a step in"):
                            self._rows(store, alone)
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, StoreError)
                else StoreError(f"run store failed: {error_text(exc)}")
            )
            return error, audit_error
        return None, audit_error

    @staticmethod
    def _rows(store: RunStore, records: list[StepRecord]) -> None:
        save_steps(store, records)

    @staticmethod
    def _witnesses(store: RunStore, logs: list[Any]) -> None:
        for sink in logs:
            pending = sink.take_pending()
            if pending is not None:
                sink.write_witness(store, pending)

    # -- transitions -----------------------------------------------------------------------------

    def step_started(self, res: StepResult, attempt: int) -> None:
        """Before the step's side effects start: stored as running, then audited."""
        events = () if self.quiet else [("step_started", res.name, {"attempt": attempt}, None)]
        self.write((res,), events, intent=True)
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
                if res.name in self._announced
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
