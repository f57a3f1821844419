"""``memory://``: an audit chain kept in a list, in this process only.

What every offline test runs on (``RunResult.audit`` reads it), so its append is the audit's hot
path in the in-memory configuration: it keeps the event objects, not their text, and stamps the
pipeline's own drafts in place (``AuditEvent.chained``'s ``keep``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from runbook.audit.events import GENESIS, AuditEvent
from runbook.audit.query import AuditQuery
from runbook.audit.verify import Check, VerifyReport, verify_chain


class MemorySink:
    """``memory://``: the chain in a list. The test helpers read ``RunResult.audit`` from here."""

    # Its events live in this process only: no crash can leave it holding more than the store,
    # so a step's start reaches it with the held outcomes, in one append (runbook.media).
    volatile = True

    def __init__(self, url: str = "memory://", best_effort: bool = False) -> None:
        self.url = url
        self.best_effort = best_effort
        self._events: list[AuditEvent] = []
        self._lock = threading.RLock()
        self._own_append = type(self).append is not MemorySink.append  # a subclass's

    def append(self, event: AuditEvent) -> AuditEvent:
        with self._lock:
            return self._chain(event)

    def append_many(self, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        with self._lock:
            if self._own_append:  # a subclass's append sees each one
                return [self.append(event) for event in events]
            chain = self._events
            prev = chain[-1] if chain else None
            seq = (prev.seq or 0) if prev else 0
            head = prev.hash if prev and prev.hash else GENESIS
            stored = []
            for event in events:  # _chain, written out: the hot path of every test's run
                seq += 1
                prev = event.chained(seq, head, line=False, keep=True)
                head = prev.hash or GENESIS
                stored.append(prev)
            chain += stored
            return stored

    def _chain(self, event: AuditEvent) -> AuditEvent:
        """Chain and keep one event (the lock held). The head is read from the list each time,
        not kept beside it: a test that edits ``_events`` sees the next event link to that."""
        chain = self._events
        prev = chain[-1] if chain else None
        stored = event.chained(
            (prev.seq or 0) + 1 if prev else 1,
            prev.hash if prev and prev.hash else GENESIS,
            line=False,  # the event is kept, not its JSON
            keep=True,  # nor a copy of a draft (AuditEvent.chained)
        )
        chain.append(stored)
        return stored

    def events(self, query: AuditQuery | None = None) -> Iterator[AuditEvent]:
        with self._lock:
            snapshot = list(self._events)
        q = query or AuditQuery()
        count = 0
        for event in snapshot:
            if q.matches(event):
                yield event
                count += 1
                if q.limit and count >= q.limit:
                    return

    @property
    def chain_id(self) -> str:
        return self.url

    def verify(self, checks: Sequence[Check] = ()) -> VerifyReport:
        with self._lock:
            events = list(self._events)
        return verify_chain(events, checks)

    def close(self) -> None:
        pass
