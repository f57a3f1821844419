"""One transition written to every medium (``Media``), in the order that keeps a crash recoverable.

A transition is the step rows it changes plus the audit events that report it, written as ONE
durable write per medium: the store rows, the events of every sink that lives in the store's own
SQLite file, and the store's witness of each sink's last event share one transaction (one
commit); every other sink gets all the events in one append (one fsync). Outcomes held on one
turn of the loop and the starts of steps launched together (runbook.grouping) are one transition
too, however many steps they are. ``RunRecorder`` (runbook/recorder.py) decides what is held and
when a transition is written; this module only writes it.

Between media the order is what makes every crash point recoverable. Intent (a step about to
start) goes to the store first ("running"), so that a step whose ``step_started`` is in the audit
is always found running by ``resume`` (which records ``step_interrupted`` and decides). An
outcome goes to the other sinks first, then to the store, so that the store never holds an
outcome the audit lacks: dying in between leaves the step "running" in the store, which resume
treats as interrupted, never as silently done. Within the shared transaction there is no order:
it commits entirely or not at all (``Media.ordered``).

When a synced JSONL trail leads the store (runbook.trail), a start is instead ONE append of the
held outcomes and the starts, then the store's commit without a WAL sync (``Media.leading``): the
store never holds more than the trail, and ``resume`` rolls forward what it lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from runbook import trail
from runbook.audit.events import AuditEvent
from runbook.audit.pipeline import Recorder
from runbook.errors import AuditError, StoreError, leaves
from runbook.store.base import RunStore, StepRecord, save_steps
from runbook.values import valid_text


class Held:
    """Outcomes waiting for the next write, which makes them durable (``RunRecorder.write``).

    A plain class: one is made per chain step, and a dataclass's default factories cost more
    than the rest of holding."""

    __slots__ = ("built", "number", "records", "stored", "then")

    def __init__(self, number: int) -> None:
        self.number = number  # RunRecorder.holds when it began
        self.records: list[StepRecord] = []
        self.built: list[AuditEvent] = []
        self.stored: dict[int, list[AuditEvent]] = {}  # by each sink, once written
        self.then: list[Callable[[], None]] = []  # each one's ``then``


def error_text(exc: BaseException) -> str:
    """``Type: message``; for an exception group, its first exception's (and how many more)."""
    inner = leaves(exc)
    more = f" (and {len(inner) - 1} more)" if len(inner) > 1 else ""
    exc = inner[0]
    text = valid_text(str(exc))
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__) + more


class Media:
    """The store and the audit sinks of one run, as one transition is written to them."""

    def __init__(self, audit: Recorder, store: RunStore | None) -> None:
        self.audit = audit
        self.store = store
        self._sinks: tuple[list[tuple[int, Any]], list[tuple[int, Any]]] | None = None
        # (the other separate sinks, those that take a start's events with the held outcomes'):
        # None when none do, from split. A crash cannot leave a ``volatile`` sink (``memory://``)
        # holding a start the store lacks, nor any sink when there is no store to lack it: those
        # take the outcomes and the starts in one append (``ordered``).
        self._volatile: tuple[list[tuple[int, Any]], list[tuple[int, Any]]] | None = None
        self.leader: Any = None  # the sink that leads the store (runbook.trail), from split
        # Steps whose ``step_started`` a sink holds but whose start was refused: ended with the
        # run (``RunRecorder._end_unstarted``), as the store has no ``running`` row for them.
        self.announced: set[str] = set()
        self._logs: list[Any] | None = None  # from _witnessing

    def ordered(
        self,
        held: Held,
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
        # append); a start's events wait for the store, below, except in a sink that lives in
        # this process only (``volatile``), which takes them all at once.
        stored: dict[int, list[AuditEvent]] = {}
        volatile = self._volatile if intent and built else None
        if volatile is not None:
            durable, together = volatile
            audit_error = audit.append(durable, held.built, stored) if durable else None
            audit_error = audit.append(together, held.built + built, stored) or audit_error
        else:
            first = held.built if intent else held.built + built
            audit_error = audit.append(separate, first, stored)
        starts, started = built, records  # what a volatile sink may hold though nothing starts
        if intent and audit_error is not None:  # outcomes refused: nothing starts after them
            records, built = [], []  # (their rows are still stored)
        joined_stored: dict[int, list[AuditEvent]] = {}
        alone = held.records + (records if regardless else [])  # if the audit part is refused
        # Only witnesses of events the leading trail has synced: losing them to a power cut
        # leaves a witness behind the trail, which is harmless (runbook.audit.log).
        witnesses_only = self.leader is not None and not held.records and not records
        store_error, joined_error = self.commit(
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
            rest = separate if volatile is None else volatile[0]
            if rest:
                for index, _ in rest:
                    new.pop(index, None)
                audit_error = audit.append(rest, built, new) or audit_error
        elif volatile is not None and any(new.get(index) for index, _ in volatile[1]):
            # A volatile sink holds starts that never began: they are ended at the run's end,
            # as a leading trail's are, and told of meanwhile.
            self.announced.update(record.name for record in started)
            built = starts
        published = audit.first(held.stored, held.built) + audit.first(new, built)
        with audit._lock:
            audit.events.extend(published)
        return published, store_error, audit_error

    def leading(
        self,
        held: Held,
        records: list[StepRecord],
        built: list[AuditEvent],
        separate: list[tuple[int, Any]],
    ) -> tuple[list[AuditEvent], StoreError | None, AuditError | None]:
        """A start when the trail leads (runbook.trail): the held outcomes' events and the
        starts' in ONE synced append, then the store's commit without a WAL sync.

        A sink that refused the append: nothing starts; the held outcomes' rows are stored
        (synced: the leader may lack their events), and steps whose ``step_started`` a sink
        took are ended at the run's end (``RunRecorder._end_unstarted``). A refused commit, or
        refused witnesses in it: the trail holds the starts, so they are ended the same way."""
        audit = self.audit
        done = len(held.built)
        stored: dict[int, list[AuditEvent]] = {}
        audit_error = audit.append(separate, held.built + built, stored)
        names = [record.name for record in records]
        if audit_error is None:
            # The commit's audit part is the witnesses of what the trail took: refused, the
            # transaction is rolled back and nothing starts; the held outcomes' rows are then
            # stored on their own (what they record happened), the starts' are not.
            store_error, audit_error = self.commit(
                held.records + records, [], [], {}, held.records, sync=False
            )
            if store_error is not None or audit_error is not None:
                self.announced.update(names)
        else:
            if any(len(events) > done for events in stored.values()):
                self.announced.update(names)
            store_error, _ = self.commit(held.records, [], [], {}, [])
        new: dict[int, list[AuditEvent]] = {}
        for index, events_stored in stored.items():
            held.stored[index] = events_stored[:done]
            new[index] = events_stored[done:]
        published = audit.first(held.stored, held.built) + audit.first(new, built)
        with audit._lock:
            audit.events.extend(published)
        return published, store_error, audit_error

    def split(self) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
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
            together = [
                pair
                for pair in separate
                if self.store is None or getattr(pair[1], "volatile", False) is True
            ]
            if together:
                durable = [pair for pair in separate if pair not in together]
                self._volatile = (durable, together)
            if not joined and separate:
                self.leader = trail.leader(self.store, [sink for _, sink in separate])
        return self._sinks

    def commit(
        self,
        records: list[StepRecord],
        built: list[AuditEvent],
        joined: list[tuple[int, Any]],
        stored: dict[int, list[AuditEvent]],
        alone: list[StepRecord],
        *,
        sync: bool = True,
        runs: Collection[str] = (),
    ) -> tuple[StoreError | None, AuditError | None]:
        """The store's part of a transition in one transaction: rows, joined sinks' events, the
        witnesses due. A refused audit part is rolled back and the rows in ``alone`` written on
        their own (an outcome is stored even when the audit refused it; a start is not). A store
        without transactions writes the witnesses first: when one is refused no row has been
        written yet, and only those in ``alone`` are. ``sync=False``: committed without a WAL
        sync, for what the leading trail already holds (runbook.trail).

        The witnesses written are this run's (or those of ``runs``, a write shared by several):
        runs sharing a log share its pending witnesses, and one run's refused witness must not
        refuse another run's commits. Those written in a transaction that does not commit are
        due again (this run's next commit writes them): a refused commit loses none."""
        store = self.store
        if store is None:
            return None, None
        logs = [sink for sink in self._witnessing() if sink.pending]
        if not records and not (joined and built) and not logs:
            return None, None
        transaction = getattr(store, "transaction", None)
        audit_error: AuditError | None = None
        # What a rolled-back transaction loses, to put back; a store without transactions keeps
        # each witness it took (``write_pending`` puts back one it refuses).
        due = [] if transaction is None else [(sink, dict(sink.pending)) for sink in logs]
        runs = runs or (self.audit.info.run_id,)
        try:
            try:
                if transaction is None:
                    self._witnesses(store, logs, runs)
                    self._rows(store, records)
                else:
                    relaxed = {} if sync else {"sync": False}
                    with transaction("record a step in", **relaxed) as conn:
                        self._rows(store, records)
                        if joined and built:
                            joined_error = self.audit.append(joined, built, stored, conn)
                            if joined_error is not None:
                                raise joined_error
                        self._witnesses(store, logs, runs)
            except AuditError as exc:  # rolled back: the rows that stand anyway, on their own
                _due_again(due)
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
            if audit_error is None:
                _due_again(due)
            error = (
                exc
                if isinstance(exc, StoreError)
                else StoreError(f"run store failed: {error_text(exc)}")
            )
            return error, audit_error
        return None, audit_error

    def _witnessing(self) -> list[Any]:
        """The sinks that keep witnesses to write (``AuditLog``), found once per run."""
        logs = self._logs
        if logs is None:
            logs = self._logs = [s for s in self.audit.sinks if hasattr(s, "write_pending")]
        return logs

    @staticmethod
    def _rows(store: RunStore, records: list[StepRecord]) -> None:
        save_steps(store, records)

    @staticmethod
    def _witnesses(store: RunStore, logs: list[Any], runs: Collection[str]) -> None:
        for sink in logs:
            sink.write_pending(store, runs)


def _due_again(due: list[tuple[Any, dict[str, Any]]]) -> None:
    """Put the witnesses a failed commit took back into their logs (one claimed since, for the
    same run, wins): the next commit writes them. A store without transactions keeps those it
    wrote before the failure; writing them again is harmless (a witness is kept unless an older
    one comes late)."""
    for sink, before in due:
        sink.pending = {**before, **sink.pending}


class Part:
    """One run's share of a transition written with other runs' (``write_together``): its held
    outcomes, the rows and events of its starts, and what the write left for it."""

    __slots__ = ("audit_error", "built", "held", "media", "new", "records", "store_error")

    def __init__(
        self, media: Media, held: Held, records: list[StepRecord], built: list[AuditEvent]
    ) -> None:
        self.media, self.held, self.records, self.built = media, held, records, built
        self.new: dict[int, list[AuditEvent]] = {}  # the starts' events, by each sink
        self.store_error: StoreError | None = None
        self.audit_error: AuditError | None = None


def can_write_together(media: Media) -> bool:
    """Whether several runs' starts on these media can be one write: the trail leads, or every
    sink lives in the store's transactions (one commit then holds everything)."""
    _, separate = media.split()
    return media.store is not None and (media.leader is not None or not separate)


def write_together(parts: Sequence[Part]) -> None:
    """The starts of several runs sharing one store and the same sinks, as ONE transition: one
    append to the leading trail (or none), one store transaction for every run's rows, joined
    events and witnesses. Each part gets its own errors: a commit refused for the batch is tried
    again run by run, so one run's refused row stops that run only."""
    first = parts[0].media
    joined, separate = first.split()
    if first.leader is not None:
        events = [event for part in parts for event in (*part.held.built, *part.built)]
        stored: dict[int, list[AuditEvent]] = {}
        audit_error = first.audit.append(separate, events, stored)
        if audit_error is None:
            rows = [part.held.records + part.records for part in parts]
            errors = _commit_each(first, parts, rows, [[] for _ in parts], [], sync=False)
        else:
            rows = [part.held.records for part in parts]
            errors = _commit_each(first, parts, rows, [[] for _ in parts], [], sync=True)
        offset = 0
        for part, (store_error, unwitnessed) in zip(parts, errors, strict=True):
            done, total = len(part.held.built), len(part.held.built) + len(part.built)
            for index, events_stored in stored.items():
                part.held.stored[index] = events_stored[offset : offset + done]
                part.new[index] = events_stored[offset + done : offset + total]
            offset += total
            # A commit whose witnesses were refused is rolled back: its starts do not start.
            took = audit_error is None and (store_error is not None or unwitnessed is not None)
            part.store_error, part.audit_error = store_error, audit_error or unwitnessed
            if took or (audit_error is not None and stored):
                part.media.announced.update(record.name for record in part.records)
        return
    rows = [part.held.records + part.records for part in parts]
    builts = [part.held.built + part.built for part in parts]
    stored_each: list[dict[int, list[AuditEvent]]] = [{} for _ in parts]
    errors = _commit_each(first, parts, rows, builts, joined, sync=True, stored=stored_each)
    for part, (store_error, audit_error), stored_part in zip(
        parts, errors, stored_each, strict=True
    ):
        done = len(part.held.built)
        for index, events_stored in stored_part.items():
            part.held.stored[index] = events_stored[:done]
            part.new[index] = events_stored[done:]
        part.store_error, part.audit_error = store_error, audit_error


def _commit_each(
    media: Media,
    parts: Sequence[Part],
    rows: list[list[StepRecord]],
    builts: list[list[AuditEvent]],
    joined: list[tuple[int, Any]],
    *,
    sync: bool,
    stored: list[dict[int, list[AuditEvent]]] | None = None,
) -> list[tuple[StoreError | None, AuditError | None]]:
    """One commit of every part's rows (and joined events); if it is refused, one per part."""
    together: dict[int, list[AuditEvent]] = {}
    all_rows = [record for part_rows in rows for record in part_rows]
    all_built = [event for built in builts for event in built]
    runs = [part.media.audit.info.run_id for part in parts]
    store_error, audit_error = media.commit(
        all_rows, all_built, joined, together, [], sync=sync, runs=runs
    )
    if store_error is None and audit_error is None:
        if stored is not None:
            offset = 0
            for target, built in zip(stored, builts, strict=True):
                for index, events_stored in together.items():
                    target[index] = events_stored[offset : offset + len(built)]
                offset += len(built)
        return [(None, None)] * len(parts)
    out: list[tuple[StoreError | None, AuditError | None]] = []
    for i, part in enumerate(parts):  # rolled back: run by run, each with its own errors
        target = stored[i] if stored is not None else {}
        alone = part.held.records
        out.append(part.media.commit(rows[i], builts[i], joined, target, alone, sync=sync))
    return out
