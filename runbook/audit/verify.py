"""Verifying a trail: the hash chain re-computed in one pass with the checks seeing every event
(``verify_chain``), and running that over any sink (``verify_sink``).

A sink's ``verify(checks)`` re-computes its chain with the checks seeing every event (and adds
what only it can see: garbled lines, edited columns). A third-party sink written before checks
existed takes no argument: its own ``verify()`` runs first, then the checks over ``events()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from runbook.audit.events import GENESIS, AuditEvent, event_hash

if TYPE_CHECKING:  # imported where used: it brings the run store's records, which the reading
    # commands (``runbook list``) do not load (tests/cli/test_startup.py)
    from runbook.audit.checks import WitnessCheck


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    seq: int | None = None  # the first bad event's seq (or where one is missing)
    problem: str = ""
    head: tuple[int, str] | None = None  # the last intact event's (seq, hash)
    notes: tuple[str, ...] = ()  # what the checks proved beyond the chain, for the message

    def __str__(self) -> str:
        noun = "event" if self.checked == 1 else "events"
        if self.ok:
            extra = "".join(f"; {note}" for note in self.notes)
            return f"ok: {self.checked} {noun}, chain intact{extra}"
        return f"TAMPERED at seq {self.seq}: {self.problem} ({self.checked} events checked)"


class BadEvent(Exception):
    """Raised by a sink's event stream for damage only the sink can see (a garbled line, an
    edited column): ``verify_chain`` reports it as the first bad event, checks unfinished."""

    def __init__(self, seq: int | None, problem: str) -> None:
        super().__init__(problem)
        self.seq = seq
        self.problem = problem


class Check(Protocol):
    """One more thing ``verify_chain`` proves in the same pass (runbook.audit.checks)."""

    def see(self, event: AuditEvent) -> str | None:
        """Called for every event after its chain link is checked: a problem, or None."""
        ...

    def finish(self, head: tuple[int, str] | None) -> tuple[int | None, str] | None:
        """Called once after the last event of an intact chain: ``(first bad seq, problem)``."""
        ...

    def note(self) -> str | None:
        """What the check proved, for an ``ok`` report."""
        ...


def verify_chain(events: Iterable[AuditEvent], checks: Sequence[Check] = ()) -> VerifyReport:
    """Re-compute the chain in stored order and name the first event that breaks it.

    Distinguishes an edited event (its hash no longer matches its content), a removed one (a gap
    in ``seq`` with a link to a hash that is not there), an inserted one and a reordered one.
    ``checks`` (signatures, the store's witness, an expected head) see each event in the same
    pass; the first problem in chain order wins, whoever finds it.
    """
    prev_hash = GENESIS
    expected_seq: int | None = None
    checked = 0
    head: tuple[int, str] | None = None
    stream = iter(events)
    while True:
        try:
            event = next(stream)
        except StopIteration:
            break
        except BadEvent as bad:
            return VerifyReport(False, checked + 1, bad.seq, bad.problem, head)
        checked += 1
        if event.hash != event_hash(event):
            return VerifyReport(
                False,
                checked,
                event.seq,
                f"event {event.seq} ({event.kind}) was edited: its hash does not match its content",
                head,
            )
        if expected_seq is not None and event.seq != expected_seq:
            if event.seq is not None and event.seq > expected_seq:
                what = (
                    f"event(s) {expected_seq}..{event.seq - 1} removed"
                    if event.seq - 1 > expected_seq
                    else f"event {expected_seq} removed"
                )
            else:
                what = (
                    f"event {event.seq} is out of order or inserted (expected seq {expected_seq})"
                )
            return VerifyReport(False, checked, event.seq, what, head)
        if event.prev_hash != prev_hash:
            return VerifyReport(
                False,
                checked,
                event.seq,
                f"event {event.seq} ({event.kind}) does not link to the event "
                "before it: an event was removed, inserted or reordered",
                head,
            )
        for check in checks:
            problem = check.see(event)
            if problem:
                return VerifyReport(False, checked, event.seq, problem, head)
        prev_hash = event.hash
        expected_seq = (event.seq or 0) + 1
        head = (event.seq or 0, event.hash or "")
    for check in checks:
        found = check.finish(head)
        if found:
            return VerifyReport(False, checked, found[0], found[1], head)
    notes = tuple(n for n in (c.note() for c in checks) if n)
    return VerifyReport(True, checked, head=head, notes=notes)


def _takes_checks(method: Any) -> bool:
    try:
        return "checks" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def verify_sink(sink: Any, checks: Sequence[Check] = ()) -> VerifyReport:
    if _takes_checks(sink.verify):
        return sink.verify(checks)
    report: VerifyReport = sink.verify()
    if not report.ok or not checks:
        return report
    return verify_chain(sink.events(None), checks)


def witness_check(store: Any, chain: str, *, empty_why: str = "") -> WitnessCheck | None:
    """The store's witness of ``chain``, or None when the store keeps none (an older plugin).

    The store's run ids are read too, so an empty trail next to a store that has runs but no
    witness (runs recorded before witnessing existed) is still reported as missing events.
    """
    from runbook.audit.checks import WitnessCheck

    read = getattr(store, "audit_witnesses", None)
    if read is None:
        return None
    witnesses = read(chain)
    runs = [r.run_id for r in store.list_runs(limit=3)]
    return WitnessCheck(witnesses, store_runs=runs, empty_why=empty_why)
