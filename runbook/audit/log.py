"""``AuditLog``: one sink as a run writes to it, plus the two proofs of completeness.

The recorder appends through this object instead of the bare sink. After the sink has stored an
event (durably, chained), the log

1. tells the run store the run's new last ``(seq, hash)`` in this chain (the witness that
   ``audit verify`` checks a cut tail against), then
2. with an ``audit_key``, appends a signed checkpoint when one is due (``must_sign``: a run's end,
   every 1,000th event), and witnesses that too.

Both happen after the event is stored, never before: a crash between the two leaves a witness
one event behind (harmless), never one ahead of the trail. A failure of either is an
``AuditError``, handled like a sink failure (the run stops unless the sink is ``best_effort``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from runbook.audit.checkpoint import make_checkpoint, must_sign
from runbook.audit.events import AuditEvent, AuditSink
from runbook.audit.signing import Signer
from runbook.audit.verify import Check, VerifyReport
from runbook.errors import AuditError, RunbookError
from runbook.urls import redact_url


def chain_id(sink: Any) -> str:
    """What names a sink's chain in the store's witness: the sink's own ``chain_id`` (an
    absolute path, a database and schema), else its URL without credentials."""
    return str(getattr(sink, "chain_id", None) or redact_url(sink.url))


class AuditLog:
    """A sink wrapped with a witness (``store``) and an optional checkpoint ``signer``."""

    def __init__(self, sink: AuditSink, *, store: Any = None, signer: Signer | None = None) -> None:
        self.sink = sink
        self.url = sink.url
        self.best_effort = sink.best_effort
        self.chain_id = chain_id(sink)
        self.signer = signer
        # A feed (logging://) restarts its chain in every process and cannot be read back:
        # nothing could check a witness of it, so none is written.
        queryable = getattr(sink, "queryable", True)
        self._witness = getattr(store, "witness_audit", None) if queryable else None
        # The witnesses not yet written, one per run (see append_many): one append may hold the
        # events of several runs (their starts written together, runbook.grouping).
        self.pending: dict[str, tuple[str, str, int, str]] = {}
        self._many = getattr(sink, "append_many", None)  # looked up once: the hot path

    def append(self, event: AuditEvent) -> AuditEvent:
        stored = self.sink.append(event)
        self._witnessed(stored)
        self._checkpoint(stored)
        return stored

    def append_many(self, events: Sequence[AuditEvent], conn: Any = None) -> list[AuditEvent]:
        """Store ``events`` in one write (one commit, one fsync) where the sink can; the witness
        of the last one is left in ``pending`` for the recorder's next store transaction.

        ``conn``: the run store's open transaction, for a sink in the store's own file
        (``joins``). A witness one event behind the trail is harmless (``audit verify`` checks
        the trail holds what was witnessed); one ahead is impossible, since it is written after
        the events are stored (or in the same commit).

        With ``conn`` the witness is written at once, in that same transaction: left pending,
        it would wait for a next commit that a run's last events never get, and the store's
        witness of that trail would stay one transition behind the run's end for good.
        """
        witness = self._pending if conn is None else self._witnessed
        if self.signer is None:
            many = self._many  # _store, written out: the hot path of every run
            if many is None:
                stored = self._store(events, conn)
            else:
                stored = many(events) if conn is None else many(events, conn)
                if type(stored) is not list:
                    stored = list(stored)
            if stored:
                last = stored[-1]
                if len(stored) > 1 and stored[0].run_id != last.run_id:
                    for event in {event.run_id: event for event in stored}.values():
                        witness(event)  # each run's last event (several runs' starts)
                else:
                    witness(last)
            return stored
        # With a key, a checkpoint must follow the event that calls for it (a run's end, every
        # 1,000th seq, known only once stored): one event at a time.
        stored = []
        for event in events:
            (one,) = self._store([event], conn)
            stored.append(one)
            witness(one)
            if must_sign(one):
                witness(self._store([self._sign(one)], conn)[-1])
        return stored

    def _store(self, events: Sequence[AuditEvent], conn: Any) -> list[AuditEvent]:
        if not events:
            return []
        many = self._many
        if many is None:  # a plugin sink without batches (never one that ``joins``)
            assert conn is None, "only a sink with append_many is handed a connection"
            return [self.sink.append(event) for event in events]
        stored = many(events) if conn is None else many(events, conn)
        return stored if type(stored) is list else list(stored)

    def joins(self, store: Any) -> bool:
        """True when this sink writes into ``store``'s own database, inside its transactions."""
        shares = getattr(self.sink, "shares_file_with", None)
        return bool(shares and not self.best_effort and shares(store))

    def prepare(self) -> None:
        prepare = getattr(self.sink, "prepare", None)
        if prepare is not None:
            prepare()

    def write_pending(self, store: Any, runs: Collection[str] | None = None) -> None:
        """Write the witnesses not yet written, ``(run_id, chain, seq, hash)`` each, into
        ``store`` (inside the caller's store transaction), and forget them; ``runs``: only
        those runs'. One the store refuses is due again, with those after it; the caller puts
        back the rest if its transaction does not commit (``runbook.media.Media.commit``)."""
        pending = self.pending
        if not pending:
            return
        if runs is None:
            taken = list(pending.values())
            self.pending = {}
        else:
            taken = [item for run in runs if (item := pending.pop(run, None)) is not None]
        witness = store.witness_audit
        for i, (run_id, chain, seq, digest) in enumerate(taken):
            try:
                witness(run_id, chain, seq, digest)
            except RunbookError as exc:
                # The refused one and those after it are due again (one claimed since wins):
                # a store without transactions keeps what it wrote, so its caller copies none.
                self.pending = {item[0]: item for item in taken[i:]} | self.pending
                raise AuditError(
                    f"audit sink {redact_url(self.url)}: event {seq} is stored but the run "
                    f"store could not witness it: {exc}"
                ) from exc

    def _pending(self, stored: AuditEvent) -> None:
        if self._witness is None:
            return
        seq, digest = stored.seq, stored.hash
        if seq is not None and digest is not None:
            self.pending[stored.run_id] = (stored.run_id, self.chain_id, seq, digest)

    def _checkpoint(self, stored: AuditEvent) -> None:
        if self.signer is None or not must_sign(stored):
            return
        self._witnessed(self.sink.append(self._sign(stored)))

    def _sign(self, stored: AuditEvent) -> AuditEvent:
        assert self.signer is not None
        try:
            return make_checkpoint(stored, self.signer)
        except Exception as exc:  # a key that cannot sign: say so, never skip silently
            raise AuditError(
                f"audit sink {redact_url(self.url)}: cannot sign a checkpoint for event "
                f"{stored.seq}: {type(exc).__name__}: {exc}"
            ) from exc

    def _witnessed(self, stored: AuditEvent) -> None:
        if self._witness is None or stored.seq is None or stored.hash is None:
            return
        try:
            self._witness(stored.run_id, self.chain_id, stored.seq, stored.hash)
        except RunbookError as exc:
            raise AuditError(
                f"audit sink {redact_url(self.url)}: event {stored.seq} is stored but the run "
                f"store could not witness it: {exc}"
            ) from exc

    def events(self, query: Any = None) -> Any:
        return self.sink.events(query)

    def verify(self, checks: Sequence[Check] = ()) -> VerifyReport:
        from runbook.audit.verify import verify_sink

        return verify_sink(self.sink, checks)

    def close(self) -> None:
        self.sink.close()

    def __getattr__(self, name: str) -> Any:
        # Anything else a sink offers (``queryable``, ``path``...) is the sink's.
        sink = self.__dict__.get("sink")
        if sink is None:
            raise AttributeError(name)
        return getattr(sink, name)

    def __repr__(self) -> str:
        return f"AuditLog({self.sink!r})"
