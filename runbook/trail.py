"""The JSONL trail as a run's write-ahead log: when it leads, and what ``resume`` reads back.

With the CLI default (a SQLite store and a ``jsonl://`` trail), a step's outcome and the next
step's start would cost two ``fsync``s and one store commit (docs/durable-runs.md: the trail's
outcome before the store's, the store's start before the trail's). When the trail **leads**, a
transition is one append of all its events to the trail (one ``fsync``), then the store's commit
*without* a WAL sync (``synchronous=NORMAL``), then the step's code. The trail is then the
durable record of every start, and the store may lag it:

- after ``kill -9`` between the append and the commit, the trail has starts the store lacks;
- after a power cut, the store may have lost its last unsynced commits (SQLite keeps a consistent
  prefix); the trail, synced before any side effect, has them all.

The store never holds more than the trail (its commit follows the ``fsync``), so what it lacks
is recovered from the trail before a stored run is continued (:func:`roll_forward`): a step the
trail started, whose row the store lost, is taken as running when the process died, so
``resume`` reports it interrupted and decides, exactly as for a step killed mid-way. Nothing the
trail started is ever forgotten or run again unasked.

Everything that is not a step's start (the run's row, a pause, a rollback's state, a resume's
decisions, the last outcome of a run) is still committed with the WAL synced, which also syncs
every unsynced commit before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from runbook import result as R
from runbook.audit.events import AuditEvent
from runbook.audit.query import AuditQuery
from runbook.errors import StoreCorrupt
from runbook.store.base import StepRecord

OPTION = "trail"  # the stored run's option naming the chain that leads (its ``chain_id``)

# A step's events after which the store's row must say the step started (or ended).
_STATE = frozenset(
    {"step_started", "step_succeeded", "step_failed", "step_skipped", "step_interrupted"}
)


def leader(store: Any, sinks: Sequence[Any]) -> Any | None:
    """The sink whose synced append a transition's store commit may rely on, or None.

    It leads when the store can commit without a sync (``relaxed_commits``), no sink writes
    inside the store's own transactions (those events would be lost with an unsynced commit),
    and it is a required sink that syncs every append (``leads``: ``jsonl://`` with ``fsync``,
    or any ``jsonl://`` under ``durability = "process"``, where nothing is synced anyway)."""
    if store is None or not getattr(store, "relaxed_commits", False):
        return None
    first = None
    for sink in sinks:
        joins = getattr(sink, "joins", None)
        if joins is not None and joins(store):
            return None
        if first is None and not sink.best_effort and getattr(sink, "leads", False) is True:
            first = sink
    return first


def trail_option(store: Any, sinks: Sequence[Any]) -> dict[str, str]:
    """The new run's option naming its leading trail (``{}`` when none leads)."""
    sink = leader(store, sinks)
    return {} if sink is None else {OPTION: sink.chain_id}


def roll_forward(
    prior: Mapping[str, StepRecord], events: Iterable[AuditEvent], run_id: str
) -> dict[str, StepRecord]:
    """The stored steps with what the trail says they lost: pure, no I/O.

    A step whose last state event in the trail is its ``step_started``, stored as anything but
    running, or one the trail started and ended whose row the store does not have (or has as
    pending), was running when its process died as far as anyone can prove: its row becomes
    ``running``, which ``resume`` and ``cancel`` decide on (``step_interrupted``). A step whose
    last event is ``step_interrupted`` was decided by an earlier resume, which wrote its state
    synced; it is left as stored."""
    last: dict[str, AuditEvent] = {}
    started: set[str] = set()
    for event in events:
        if event.step is None or event.kind not in _STATE or event.run_id != run_id:
            continue
        last[event.step] = event
        if event.kind == "step_started":
            started.add(event.step)
    steps = dict(prior)
    for name in started:
        event = last[name]
        row = steps.get(name)
        status = None if row is None else row.status
        if event.kind == "step_interrupted" or status == R.STEP_RUNNING:
            continue
        if event.kind != "step_started" and status not in (None, R.PENDING):
            continue  # the store has the outcome too (or a later state)
        attempt = event.data.get("attempt") if event.kind == "step_started" else None
        attempts = max(row.attempts if row else 0, attempt if isinstance(attempt, int) else 0)
        if row is None:
            steps[name] = StepRecord(run_id, name, R.STEP_RUNNING, attempts=attempts)
        else:
            steps[name] = replace(row, status=R.STEP_RUNNING, attempts=attempts)
    return steps


def events_of(chain: str, run_id: str, sinks: Sequence[Any], *, after: int = 0) -> list[AuditEvent]:
    """The run's events in the trail named ``chain`` (a configured sink's, or the file itself
    when the configuration changed since the run started); a trail that is gone is refused:
    without it, what the store lost in a power cut cannot be known.

    ``after``: the store's witness of the run in that trail. The witness is committed with the
    rows of the same transition, and SQLite keeps a prefix of its commits, so the store holds
    everything up to it: only the events after it are read, from the end of the file."""
    sink = next((s for s in sinks if getattr(s, "chain_id", None) == chain), None)
    opened = None
    if sink is None:
        from runbook.audit.jsonl import JsonlSink

        if not chain.startswith("jsonl://"):
            raise StoreCorrupt(
                f"run {run_id}: its steps were recorded first in the audit trail {chain}, "
                "which this runbook cannot read; nothing was changed"
            )
        sink = opened = JsonlSink.open(chain)
    try:
        missing = getattr(sink, "missing", lambda: None)()
        if missing is not None:
            raise StoreCorrupt(
                f"run {run_id}: its steps were recorded first in the audit trail {chain}, and "
                f"{missing}: the run store alone may lack steps that started; nothing was "
                "changed"
            )
        tail = getattr(sink, "events_after", None)
        if after > 0 and tail is not None:
            return [event for event in tail(after) if event.run_id == run_id]
        return list(sink.events(AuditQuery(run_id=run_id)))
    finally:
        if opened is not None:
            opened.close()


def witnessed(store: Any, chain: str, run_id: str) -> int:
    """The seq of the run's last event in ``chain`` that the store witnessed (0: none): one
    lookup where the store has ``audit_witness``, else every witness of the chain read."""
    one = getattr(store, "audit_witness", None)
    if one is not None:
        found = one(run_id, chain)
        return 0 if found is None else found.seq
    read = getattr(store, "audit_witnesses", None)
    if read is None:
        return 0
    return max((w.seq for w in read(chain) if w.run_id == run_id), default=0)


def rolled_forward(
    store: Any, record: Any, sinks: Sequence[Any], prior: Mapping[str, StepRecord]
) -> dict[str, StepRecord]:
    """``prior`` (the run's stored steps) with what the trail leading the run ``record`` holds
    and the store may have lost rolled forward: what ``resume`` decides from, and what ``runbook
    show`` shows. Raises ``StoreCorrupt`` as ``events_of`` does."""
    chain = record.options.get(OPTION)
    if not isinstance(chain, str):
        return dict(prior)
    after = witnessed(store, chain, record.run_id)
    events = events_of(chain, record.run_id, sinks, after=after)
    return roll_forward(prior, events, record.run_id)
