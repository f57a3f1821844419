"""The driver loop: ties the coordinator, the recorder, an executor, locks and gates together.

One ``Execution`` per run. The coordinator (``runbook.coordinator``) decides what is ready, what
is skipped, whether to retry and what to roll back; the recorder (``runbook.recorder``) makes each
transition durable (store row, audit event, hook) before the next side effect; the executor
(``runbook.executors``) runs one step attempt. The driver's own parts, each in its module:

- ``runbook.scheduling``: up to ``max_parallel`` step tasks at once, started as steps get ready;
- ``runbook.attempts``: one step from its inputs to its outcome (``when=``, lock, the attempts,
  waiting for a retry through the run's clock with jitter from the run's RNG);
- ``runbook.gates``: what an approval gate's verdict does to the step and the run;
- ``runbook.rollbacks``: the undo of each step the coordinator names, shielded from cancellation.

What stays here is the run itself: its start (restored state, a resume's decisions audited, the
run lock), the callbacks of its locks and their leases, cancellation, and its end (the result,
locks released or kept across a pause, resources closed).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from functools import partial
from random import Random
from typing import Any

from runbook import result as R
from runbook import stdio, tracing
from runbook.approval_policy import ApprovalPolicy
from runbook.attempts import run_step
from runbook.audit.pipeline import Recorder
from runbook.clock import Clock
from runbook.collect import Runbook
from runbook.context import RunInfo
from runbook.coordinator import Coordinator
from runbook.errors import AuditError, LockHeld, StoreError
from runbook.executors import Executor
from runbook.grouping import StartGroup, starts_together
from runbook.interruptions import CANCELLED, FAILED, SKIP
from runbook.locks.base import Lease, expand_name
from runbook.locks.manager import LockManager, since
from runbook.recorder import RunRecorder, error_text
from runbook.redact import Redactor
from runbook.result import RunResult
from runbook.rollbacks import rollback_all
from runbook.scheduling import StepTasks, uncancel
from runbook.scope import ResourceScope
from runbook.store.base import RunStore, StepRecord

__all__ = ["Execution", "RunSetup"]


@dataclass
class RunSetup:
    """Everything an execution needs, assembled by the Runner."""

    runbook: Runbook
    info: RunInfo
    scope: ResourceScope
    recorder: Recorder
    clock: Clock
    hook: Any  # pluggy hook relay
    hooks_wanted: frozenset[str]
    store: RunStore | None
    locks: LockManager | None
    approvals: ApprovalPolicy
    redactor: Redactor
    executor: Executor  # opened per run by the Runner (``Runner.open_executor``)
    max_parallel: int = 8
    dry_run: bool = False
    prior: dict[str, StepRecord] = field(default_factory=dict)
    # Resume: what to do with each interrupted step or rollback (runbook.coordinator decisions),
    # which of them were rollbacks, and why the run had begun to roll back (stored cause).
    decisions: dict[str, str] = field(default_factory=dict)
    started: dict[str, Any] = field(default_factory=dict)  # extra run_started data (retry_of)
    interrupted: dict[str, str] = field(default_factory=dict)  # those found running: reported
    interrupted_rollbacks: frozenset[str] = frozenset()
    rollback_cause: str | None = None
    run_options: dict[str, Any] = field(default_factory=dict)
    rng: Random = field(default_factory=Random)
    keep_lock_when_paused: bool = True
    paused_lease: float = 7 * 24 * 3600.0
    deny_only: bool = False  # deny/cancel: schedule nothing new, just settle and roll back
    cancel: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)
    resumed_by: str | None = None  # who resumed/denied/cancelled, when not the run's actor
    failed_gates: dict[str, str] = field(default_factory=dict)  # settle: gate -> failure reason
    settle_data: dict[str, Any] = field(default_factory=dict)  # cancel: its signature, if any
    # Into run_resumed: ``forced`` (old/new sha256), ``signed_decision`` (retry/skip, signed).
    resume_data: dict[str, Any] = field(default_factory=dict)
    # Shared by the runs of one Runner on one loop (their starts written together); None: own.
    starts: StartGroup | None = None


class _Unrecorded(Exception):
    """A resume whose decisions could not be recorded (``error``): nothing may act on them."""

    def __init__(self, error: AuditError | StoreError) -> None:
        super().__init__(str(error))
        self.error = error


def _after_the_run(exc: BaseException) -> None:
    """``on_fatal`` once a run is over: nothing is left to stop (the write still raises)."""


class Execution:
    def __init__(self, setup: RunSetup) -> None:
        self.s = setup
        self.rb = setup.runbook
        self.steps = self.rb.steps
        self.clock = setup.clock
        self.coord = Coordinator(self.rb)
        self.results = self.coord.results
        self.outputs = setup.outputs
        self.fatal: BaseException | None = None
        self.lock_denied: str | None = None
        self.rec = RunRecorder(
            setup.recorder,
            setup.store,
            hook=setup.hook,
            hooks_wanted=setup.hooks_wanted,
            redactor=setup.redactor,
            dry_run=setup.dry_run,
            on_fatal=self.fail_run,
            seq_of=self.coord.seqs.get,
            run_options=setup.run_options,
        )
        self.executor: Executor = setup.executor
        self.lost: dict[str, Exception] = {}  # steps whose lease was lost: their error
        self.not_started: list[str] = []  # refused starts, recorded with the run's end
        self.run_lock: str | None = None
        # Starts of steps launched together: one transition (runbook.grouping), when written.
        # Starts launched together, in this run or in the other runs sharing the group.
        self.starts = setup.starts or StartGroup(starts_together)
        self.group = self.rec.store is not None or not self.rec.quiet
        self.tasks = StepTasks(
            self.coord,
            self.rec,
            self.starts,
            group=self.group,
            limit=max(1, setup.max_parallel),
            run_step=partial(run_step, self),
            on_error=self.fail_run,
        )

    # -- what the gates, ctx and lock callbacks use ---------------------------------------------

    def emit(
        self, kind: str, step: str | None = None, data: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        """Audit an event; a refused required sink makes the run fail before its next effect."""
        self.rec.emit(kind, step, data, **kw)

    def fail_run(self, exc: BaseException) -> None:
        """The run fails (the first such error is its error): nothing new starts, it rolls back."""
        if self.fatal is None:
            self.fatal = exc
        self.coord.fail_run()

    def template(self, template: str) -> str:
        return expand_name(template, env=self.s.info.env, params=self.s.scope.get("params"))

    # -- the run --------------------------------------------------------------------------------

    async def execute(self) -> RunResult:
        """The run, inside its ``runbook.run`` span (a no-op without opentelemetry-api)."""
        info = self.s.info
        self.starts.enter()
        mask = self.s.redactor.text if self.s.redactor else None
        try:
            with stdio.masked(mask), tracing.run_span(info.run_id, info.name, info.env) as span:
                result = await self._execute()
                failed = result.status in (R.FAILED, R.ROLLED_BACK, R.ROLLBACK_FAILED)
                span.set_status(result.status, result.error if failed else None)
                return result
        finally:
            self.starts.leave()

    async def _execute(self) -> RunResult:
        s, info, coord = self.s, self.s.info, self.coord
        started = self.clock.now()
        # What resume decided changes stored states (an interrupted step no longer "running"):
        # those rows are written only once ``step_interrupted`` is audited, so a process dying in
        # between leaves the steps still running, to be found (and audited) again.
        changed = list(
            coord.restore(s.prior, self.outputs, decisions=s.decisions, cause=s.rollback_cause)
        )
        if s.deny_only:
            for name in coord.settle(cancel=s.cancel, failed_gates=s.failed_gates):
                changed.append(name)
                if name in s.failed_gates:
                    self.emit("step_failed", name, {"error": self.results[name].error})
        if not info.resumed or s.dry_run:
            self._save_all(changed)
        self.rec.hook("runbook_run_started")
        try:
            try:
                if s.dry_run:
                    pass
                elif info.resumed:
                    try:
                        self._record_resume(changed)
                    except (AuditError, StoreError) as exc:
                        raise _Unrecorded(exc) from None
                else:
                    # approval_required: what audit verify --signers holds an auto grant to.
                    required = s.approvals.protection.require_approval
                    data = {"max_parallel": s.max_parallel, "approval_required": required}
                    self.emit("run_started", None, {**data, **s.started})
                if self.rb.lock and s.locks and not s.dry_run:
                    self.run_lock = self.template(self.rb.lock)
                    await self.acquire([self.run_lock], None)
                if not (s.deny_only or coord.cancelled):
                    await self.tasks.run()
            except asyncio.CancelledError:
                coord.cancel_run()
                uncancel()
                await self.tasks.cancel_all()
            except (AuditError, StoreError) as exc:
                self.fail_run(exc)
            if coord.stopping and not s.dry_run:
                with contextlib.suppress(StoreError):  # reported through fail_run; undo anyway
                    cause = CANCELLED if coord.cancelled else FAILED
                    self.rec.rollback_begun(cause, self._error())
                await rollback_all(self)
        except _Unrecorded as refused:
            # The resume's decisions (run_resumed, step_interrupted, their rows) were refused:
            # acting on them now (undoing a cut-off step, storing it cancelled) would leave a
            # trail whose step_started has neither an outcome nor an interruption after it.
            # Stop before any side effect; the store is as the dead process left it, so the
            # next resume (once the sink or store works) decides again, audited.
            await self._teardown(paused=False)
            raise refused.error from None
        except LockHeld as exc:
            # Refused at the start (run lock, or the run lock again on resume): nothing ran.
            await self._teardown(paused=False)
            self.rec.run_refused(exc, still_waiting=bool(coord.awaiting()))  # never a dry run
            raise
        status = coord.status(dry_run=s.dry_run)
        await self._teardown(paused=status == R.PAUSED)
        error = self._error()
        result = RunResult(
            run_id=info.run_id,
            status=status,
            runbook=info.runbook,
            env=info.env,
            actor=info.actor,
            steps=self.results,
            audit=s.recorder.events,
            error=error,
            started_at=started,
            finished_at=self.clock.now(),
            dry_run=s.dry_run,
            lock_denied=self.lock_denied,
            redactor=s.redactor,
        )
        self.rec.run_finished(
            result,
            resumed_by=s.resumed_by,
            settle_data=s.settle_data,
            not_started=[self.results[name] for name in self.not_started],
        )
        return result

    def _record_resume(self, changed: list[str]) -> None:
        """A resume's decisions, audited before their rows are stored (see ``_execute``)."""
        s, info = self.s, self.s.info
        self.emit(
            "run_resumed",
            None,
            {
                "resumed_by": s.resumed_by or info.actor,
                "interrupted": s.interrupted,
                **s.resume_data,
            },
            actor=s.resumed_by,
        )
        for name, decision in s.interrupted.items():
            rollback = name in s.interrupted_rollbacks
            self.rec.step_interrupted(self.results[name], decision, rollback=rollback)
            if decision == SKIP and not rollback:
                self.emit("step_skipped", name, {"reason": "skipped (operator)"})
        self._save_all(changed)

    def _save_all(self, names: list[str]) -> None:
        """The rows of ``names`` in one store transaction."""
        if names:
            results = [self.results[name] for name in dict.fromkeys(names)]
            self.rec.write(results, (), intent=True)

    def _error(self) -> str | None:
        if self.fatal is not None:
            return self.s.redactor.text(error_text(self.fatal))
        return self.coord.first_error() or self.s.run_options.get("error")

    # -- what the step, gate and rollback drivers share -----------------------------------------

    def finish(
        self,
        name: str,
        *,
        error: str | None = None,
        event: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Stamp a step that reached a status (set by the coordinator) and record it."""
        res = self.results[name]
        if error is not None:
            res.error = self.s.redactor.text(error)
        if res.started_at is not None and res.status != R.AWAITING_APPROVAL:
            res.finished_at = self.clock.now()
            res.duration = (res.finished_at - res.started_at).total_seconds()
        self.rec.step_finished(res, event, data, hold=True)

    def skip(self, name: str, reason: str) -> None:
        """Step ``name`` is skipped, for ``reason``."""
        self.coord.on_skipped(name, reason)
        self.finish(name, event="step_skipped", data={"reason": reason})

    def fail(self, name: str, error: str, data: dict[str, Any]) -> None:
        """Step ``name`` failed with ``error`` (``data``: its ``step_failed`` event's)."""
        self.coord.on_failed(name)
        self.finish(name, error=error, event="step_failed", data=data)

    # -- locks ----------------------------------------------------------------------------------

    def token(self, lock_name: str | None) -> int | None:
        """The fencing token a step's attempts carry: its own lock's, else the run lock's."""
        locks = self.s.locks
        if locks is None:
            return None
        for candidate in (lock_name, self.run_lock):
            if candidate and (lease := locks.lease_of(candidate)) is not None:
                return lease.token
        return None

    async def acquire(self, names: list[str], step: str | None) -> None:
        """Take ``names`` for ``step`` (None: the run), audited; ``LockHeld`` when refused."""
        locks = self.s.locks
        assert locks is not None
        self.rec.flush()  # nothing held while waiting
        try:
            leases = await locks.acquire(names)
        except LockHeld as exc:
            self.rec.lock_denied(exc, step)
            raise
        self.rec.locks_acquired(leases, step)

    def on_lock_wait(self, name: str, lease: Lease | None, waited: float) -> None:
        """Progress while waiting for a lock: who holds it and since when."""
        if lease is None or not lease.owner:  # released meanwhile, or the holder is unknown
            message = f"waiting for lock {name}"
        else:
            who = f"run {lease.owner}" + (f" ({lease.actor})" if lease.actor else "")
            message = f"waiting for lock {name} held by {who} since {since(lease)}"
        self.rec.hook("runbook_progress", step=None, message=message, fraction=None)

    def on_lease_lost(self, name: str, exc: Exception) -> None:
        """Called by the LockManager: fail the steps the lock protected instead of going on."""
        for task, step in list(self.tasks.running.items()):
            lock = self.steps[step].options.lock
            if name == self.run_lock or (lock and self.template(lock) == name):
                self.lost[step] = exc
                task.cancel()

    # -- the end --------------------------------------------------------------------------------

    def release(self) -> None:
        """Once the run is over: the recorder no longer calls back into this execution (that
        reference made a cycle, left to the cyclic collector; runbook.runner)."""
        self.rec.on_fatal = _after_the_run
        self.tasks.release()

    async def _teardown(self, *, paused: bool) -> None:
        with contextlib.suppress(AuditError, StoreError):  # reported through fail_run
            self.rec.flush()
        locks = self.s.locks
        if locks is not None:
            if paused and self.s.keep_lock_when_paused and self.run_lock:
                # Keep the run lock across the pause: extend it so it outlives this process.
                with contextlib.suppress(Exception):  # serialised with the keeper's renewals
                    await locks.extend([self.run_lock], self.s.paused_lease)
                others = [lease.name for lease in locks.held() if lease.name != self.run_lock]
                self.rec.locks_released(await locks.release(others), None, stop=False)
            else:
                self.rec.locks_released(await locks.release_all(), None, stop=False)
            await locks.aclose()
        for error in self.s.scope.close():
            import logging

            logging.getLogger("runbook").warning(self.s.redactor.text(error))
        await self.executor.aclose()
