"""``memory://``: a run store in a dict, for tests and for runs that need no history."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from runbook.errors import RunNotFound, StoreError
from runbook.store.base import (
    ApprovalRecord,
    AuditWitness,
    InterruptDecision,
    RunRecord,
    StepRecord,
)

# One namespace per URL so that two Runner objects given "memory://shared" see the same runs,
# which is what a test of approve-then-resume needs.
_SHARED: dict[str, MemoryStore] = {}
_SHARED_LOCK = threading.Lock()


class MemoryStore:
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[str, dict[str, StepRecord]] = {}
        self._approvals: list[ApprovalRecord] = []
        self._decisions: list[InterruptDecision] = []
        # (run, chain) -> (seq, hash): a witness is written per step and read by ``audit verify``
        # only, so the record is made on reading.
        self._witnesses: dict[tuple[str, str], tuple[int, str]] = {}

    @classmethod
    def open(cls, url: str) -> MemoryStore:
        name = url.removeprefix("memory://")
        if not name:
            return cls(url)
        with _SHARED_LOCK:
            if name not in _SHARED:
                _SHARED[name] = cls(url)
            return _SHARED[name]

    def create_run(self, run: RunRecord) -> None:
        with self._lock:
            if run.run_id in self._runs:
                raise StoreError(f"run {run.run_id!r} already exists in {self.url}")
            now = datetime.now(UTC)
            self._runs[run.run_id] = replace(run, created_at=run.created_at or now, updated_at=now)
            self._steps.setdefault(run.run_id, {})

    def update_run(self, run_id: str, **changes: Any) -> RunRecord:
        with self._lock:
            run = self.get_run(run_id)
            run = replace(run, updated_at=datetime.now(UTC), **changes)
            self._runs[run_id] = run
            return run

    def get_run(self, run_id: str) -> RunRecord:
        with self._lock:
            try:
                return self._runs[run_id]
            except KeyError:
                raise RunNotFound(f"no run {run_id!r} in {self.url}") from None

    def list_runs(self, *, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        with self._lock:
            runs = [r for r in self._runs.values() if status is None or r.status == status]
        runs.sort(key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return runs[:limit]

    def save_step(self, step: StepRecord) -> None:
        with self._lock:
            self._put(step)

    def save_steps(self, steps: list[StepRecord]) -> None:
        """The rows of one transition under one lock (``runbook.store.base.save_steps``)."""
        if "save_step" in self.__dict__ or type(self).save_step is not MemoryStore.save_step:
            # A subclass's or a test's own ``save_step`` sees each row.
            for step in steps:
                self.save_step(step)
            return
        with self._lock:
            for step in steps:
                self._put(step)

    def _put(self, step: StepRecord) -> None:
        """Store one row, the lock held: a run that does not exist raises ``RunNotFound``."""
        rows = self._steps.get(step.run_id)
        if rows is None or step.run_id not in self._runs:
            self.get_run(step.run_id)  # raises RunNotFound
            rows = self._steps.setdefault(step.run_id, {})
        rows[step.name] = step

    def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        with self._lock:
            return dict(self._steps.get(run_id, {}))

    def add_approval(self, approval: ApprovalRecord) -> None:
        with self._lock:
            self.get_run(approval.run_id)
            self._approvals.append(approval)

    def approvals(self, run_id: str, step: str | None = None) -> list[ApprovalRecord]:
        with self._lock:
            return [
                a
                for a in self._approvals
                if a.run_id == run_id and (step is None or a.step == step)
            ]

    def add_interrupt_decision(self, decision: InterruptDecision) -> None:
        with self._lock:
            self.get_run(decision.run_id)
            self._decisions.append(decision)

    def interrupt_decisions(self, run_id: str) -> list[InterruptDecision]:
        with self._lock:
            return [d for d in self._decisions if d.run_id == run_id]

    def witness_audit(self, run_id: str, chain: str, seq: int, hash: str) -> None:
        with self._lock:
            key = (run_id, chain)
            kept = self._witnesses.get(key)
            if kept is None or seq > kept[0]:
                self._witnesses[key] = (seq, hash)

    def audit_witness(self, run_id: str, chain: str) -> AuditWitness | None:
        with self._lock:
            kept = self._witnesses.get((run_id, chain))
        return None if kept is None else AuditWitness(run_id, chain, kept[0], kept[1])

    def audit_witnesses(self, chain: str | None = None) -> list[AuditWitness]:
        with self._lock:
            found = [
                AuditWitness(run, name, seq, digest)
                for (run, name), (seq, digest) in self._witnesses.items()
                if chain is None or name == chain
            ]
        return sorted(found, key=lambda w: (w.seq, w.chain, w.run_id))

    def close(self) -> None:
        pass


from runbook.hookspecs import Provider, hookimpl  # noqa: E402


@hookimpl
def runbook_run_stores() -> list[Provider]:
    return [
        Provider(
            "memory",
            lambda url, **_: MemoryStore.open(url),
            "in-process store; memory://NAME is shared within the process",
        )
    ]
