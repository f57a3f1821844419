"""The run store contract: where runs, step states, outputs and approvals live between processes.

State is written before a step's side effects start (status ``running``) and after they end, so a
process that dies leaves a store that says exactly which step was interrupted. Implementations must
make each method one transaction and be safe with several processes sharing one store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    runbook_path: str
    runbook_sha256: str
    env: str
    actor: str
    status: str
    params: dict[str, Any] = field(default_factory=dict)  # secrets stored as "***", never the value
    created_at: datetime | None = None
    updated_at: datetime | None = None
    host: str = ""
    pid: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # max_parallel, dry_run, ...
    error: str | None = None

    def evolve(self, **changes: Any) -> RunRecord:
        """A copy with ``changes``: records are frozen, so a stored one is never edited in place."""
        return replace(self, **changes)


@dataclass(frozen=True, init=False)
class StepRecord:
    run_id: str
    name: str
    status: str
    output: Any = None  # JSON-serialisable; the engine refuses other outputs with a clear error
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: float | None = None
    reason: str | None = None
    # Monotonic per run: the order in which steps finished (succeeded, failed, cut off), from
    # which the rollback order is rebuilt on resume.
    completed_seq: int | None = None
    # The step's own rollback: None, "running" (written before it starts), "rolled_back",
    # "rollback_failed" (runbook.result.ROLLBACK_STATES).
    rollback: str | None = None

    def __init__(
        self,
        run_id: str,
        name: str,
        status: str,
        output: Any = None,
        error: str | None = None,
        attempts: int = 0,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        duration: float | None = None,
        reason: str | None = None,
        completed_seq: int | None = None,
        rollback: str | None = None,
    ) -> None:
        # Written out instead of the frozen dataclass's ``__init__`` (one ``object.__setattr__``
        # per field: 1.75 us, against 0.5 us for this): a run makes two per step. The fields and
        # defaults are checked against this signature at import (``_same_init``).
        self.__dict__.update(
            run_id=run_id,
            name=name,
            status=status,
            output=output,
            error=error,
            attempts=attempts,
            started_at=started_at,
            finished_at=finished_at,
            duration=duration,
            reason=reason,
            completed_seq=completed_seq,
            rollback=rollback,
        )


def _same_init(cls: type) -> None:
    """Refuse a hand-written ``__init__`` whose parameters are not the dataclass's fields, in
    order, with the same defaults (a field added to one and not the other)."""
    import dataclasses
    import inspect

    params = inspect.signature(cls).parameters.values()
    fields = dataclasses.fields(cls)
    if [(p.name, p.default) for p in params] != [
        (f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
        for f in fields
    ]:
        raise RuntimeError(f"{cls.__name__}.__init__ must take exactly its fields, in order")


_same_init(StepRecord)


@dataclass(frozen=True)
class ApprovalRecord:
    run_id: str
    step: str
    actor: str
    decision: str  # "granted" | "denied"
    comment: str = ""
    at: datetime | None = None
    auto: bool = False  # granted by an env with protection "none", recorded as such
    # What the decision is bound to: ``plan_hash``, ``signed_at``, and in a ``signers`` env the
    # ``signature``, ``signer`` and ``key_fingerprint`` (see runbook/approvals.py).
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InterruptDecision:
    """What a human chose for a step that was running when its process died."""

    run_id: str
    step: str
    choice: str  # "retry" | "skip"
    actor: str
    at: datetime | None = None


@dataclass(frozen=True)
class AuditWitness:
    """The store's copy of one run's last audit event in one chain (``chain`` is the sink's
    ``chain_id``): what ``runbook audit verify`` uses to tell a cut tail from a short trail."""

    run_id: str
    chain: str
    seq: int
    hash: str


@runtime_checkable
class RunStore(Protocol):
    """Opened from a URL by a plugin (``runbook_run_stores`` hook); ``memory://`` is built in."""

    url: str

    def create_run(self, run: RunRecord) -> None:
        """Insert a new run; it exists before its first step starts, so a crash is resumable."""
        ...

    def update_run(self, run_id: str, **changes: Any) -> RunRecord:
        """Change fields of a run (``status``, ``error``, ``pid``...), stamping ``updated_at``."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """Raise ``runbook.errors.RunNotFound`` when absent, ``StoreCorrupt`` for a bad row."""
        ...

    def list_runs(self, *, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Newest first."""
        ...

    def save_step(self, step: StepRecord) -> None:
        """Insert or replace the state of one step of one run."""
        ...

    def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        """Every stored step of the run by name (an empty dict for an unknown run)."""
        ...

    def add_approval(self, approval: ApprovalRecord) -> None:
        """Append a decision on a gate; decisions are never replaced (they are evidence)."""
        ...

    def approvals(self, run_id: str, step: str | None = None) -> list[ApprovalRecord]:
        """In the order they were given."""
        ...

    def add_interrupt_decision(self, decision: InterruptDecision) -> None:
        """Append a human's retry/skip choice for a step its dead process left unfinished."""
        ...

    def interrupt_decisions(self, run_id: str) -> list[InterruptDecision]:
        """In the order they were made."""
        ...

    def witness_audit(self, run_id: str, chain: str, seq: int, hash: str) -> None:
        """Remember ``(seq, hash)`` as the run's last event in ``chain``; a lower ``seq`` than the
        one kept is ignored. Needs no run row (an event may come before it or outlive it)."""
        ...

    def audit_witnesses(self, chain: str | None = None) -> list[AuditWitness]:
        """Every run's witnessed head, in ``chain`` or in all chains, by ``seq``.

        A store may also offer ``audit_witness(run_id, chain) -> AuditWitness | None`` (one
        run's, by its key): ``resume`` and ``runbook show`` then look it up instead of reading
        every run's witness of the chain (runbook.trail.witnessed)."""
        ...

    def close(self) -> None:
        """Release connections and files; closing twice is harmless."""
        ...


def save_steps(store: RunStore, steps: Sequence[StepRecord]) -> None:
    """Store the rows of one transition: with the store's own ``save_steps(steps)`` where it
    has one (one statement for all of them), else one ``save_step`` per row. Optional, so a
    store written against the protocol above (``memory://``, a plugin's) keeps working as is;
    either way the caller's transaction, if any, makes them one commit."""
    many = getattr(store, "save_steps", None)
    if many is not None:
        many(steps)
        return
    for step in steps:
        store.save_step(step)
