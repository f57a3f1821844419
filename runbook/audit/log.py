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

from collections.abc import Sequence
from typing import Any

from runbook.audit.checkpoint import make_checkpoint, must_sign
from runbook.audit.events import AuditEvent, AuditSink, Check, VerifyReport
from runbook.audit.signing import Signer
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

    def append(self, event: AuditEvent) -> AuditEvent:
        stored = self.sink.append(event)
        self._witnessed(stored)
        if self.signer is not None and must_sign(stored):
            try:
                checkpoint = make_checkpoint(stored, self.signer)
            except Exception as exc:  # a key that cannot sign: say so, never skip silently
                raise AuditError(
                    f"audit sink {redact_url(self.url)}: cannot sign a checkpoint for event "
                    f"{stored.seq}: {type(exc).__name__}: {exc}"
                ) from exc
            self._witnessed(self.sink.append(checkpoint))
        return stored

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
