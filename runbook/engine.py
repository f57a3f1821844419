"""The driver loop: ties the coordinator, the recorder, an executor, locks and gates together.

One ``Execution`` per run. The coordinator (``runbook.coordinator``) decides what is ready, what
is skipped, whether to retry and what to roll back; the recorder (``runbook.recorder``) makes each
transition durable (store row, audit event, hook) before the next side effect; the executor
(``runbook.executors``) runs one step attempt. What stays here is what needs the event loop: up
to ``max_parallel`` step tasks at once, ``when=`` and gate checks, locks and their leases,
cancellation, and waiting (backoff through the run's clock, jitter from the run's RNG).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from random import Random
from typing import Any

from runbook import result as R
from runbook import tracing
from runbook.approvals import ApprovalPolicy
from runbook.audit.pipeline import Recorder
from runbook.clock import Clock
from runbook.collect import Arg, Runbook, StepDef
from runbook.context import CURRENT_STEP, FENCING_TOKEN, RunInfo
from runbook.coordinator import CANCELLED, FAILED, REDACTED_KEY, SKIP, Coordinator, is_redacted
from runbook.errors import (
    AuditError,
    LeaseLost,
    LockHeld,
    RollbackHalted,
    RunbookError,
    StoreError,
)
from runbook.executors import Attempt, Executor
from runbook.failure import LOG
from runbook.failure import describe as describe_failure
from runbook.grouping import StartGroup
from runbook.locks.base import Lease, expand_name
from runbook.locks.manager import LockManager, since
from runbook.recorder import RunRecorder, error_text
from runbook.redact import Redactor
from runbook.result import RunResult
from runbook.scope import ResourceScope
from runbook.store.base import RunStore, StepRecord
from runbook.values import output_problem

__all__ = ["REDACTED_KEY", "Execution", "RunSetup", "is_redacted"]

_NOTHING = object()
# The reason stored for a step whose start was refused (by a required sink or the store): it
# never called its code, so it ends ``cancelled`` with this reason, never ``running``.
NOT_STARTED = "not started: its start could not be recorded"


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


def gate_reason(approval: Any, kwargs: dict[str, Any]) -> str | None:
    """The question an approval gate asks (``Approval(reason=...)``), from the step's inputs."""
    if approval.reason is None:
        return None
    try:
        return str(approval.reason(**kwargs))
    except Exception as exc:  # a broken reason must not hide the gate itself
        return f"(reason unavailable: {error_text(exc)})"


def _uncancel() -> None:
    """Take back the cancellation just caught, so this task can finish what it must."""
    task = asyncio.current_task()
    assert task is not None  # the engine always runs inside a task
    task.uncancel()


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
            on_fatal=self._fatal,
            seq_of=self.coord.seqs.get,
            run_options=setup.run_options,
        )
        self.executor: Executor = setup.executor
        self._tasks: dict[asyncio.Task[None], str] = {}
        self._lost: dict[str, Exception] = {}
        self._not_started: list[str] = []  # refused starts, recorded with the run's end
        self._run_lock: str | None = None
        self._limit = max(1, setup.max_parallel)
        # Starts of steps launched together: one transition (runbook.grouping), when written.
        self._starts = StartGroup(self.rec.steps_started)
        self._group = self.rec.store is not None or not self.rec.quiet

    # -- what the gates, ctx and lock callbacks use ---------------------------------------------

    def emit(
        self, kind: str, step: str | None = None, data: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        """Audit an event; a refused required sink makes the run fail before its next effect."""
        self.rec.emit(kind, step, data, **kw)

    def _fatal(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.coord.fail_run()

    def _template(self, template: str) -> str:
        return expand_name(template, env=self.s.info.env, params=self.s.scope.get("params"))

    # -- the run --------------------------------------------------------------------------------

    async def execute(self) -> RunResult:
        """The run, inside its ``runbook.run`` span (a no-op without opentelemetry-api)."""
        info = self.s.info
        with tracing.run_span(info.run_id, info.name, info.env) as span:
            result = await self._execute()
            failed = result.status in (R.FAILED, R.ROLLED_BACK, R.ROLLBACK_FAILED)
            span.set_status(result.status, result.error if failed else None)
            return result

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
                    self.emit("run_started", None, {"max_parallel": s.max_parallel, **s.started})
                if self.rb.lock and s.locks and not s.dry_run:
                    self._run_lock = self._template(self.rb.lock)
                    await self._acquire([self._run_lock], None)
                if not (s.deny_only or coord.cancelled):
                    await self._schedule()
            except asyncio.CancelledError:
                coord.cancel_run()
                _uncancel()
                await self._cancel_running()
            except (AuditError, StoreError) as exc:
                self._fatal(exc)
            if coord.stopping and not s.dry_run:
                with contextlib.suppress(StoreError):  # reported through _fatal; undo anyway
                    cause = CANCELLED if coord.cancelled else FAILED
                    self.rec.rollback_begun(cause, self._error())
                await self._rollback_all()
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
            not_started=[self.results[name] for name in self._not_started],
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

    # -- scheduling -----------------------------------------------------------------------------

    async def _schedule(self) -> None:
        """Event-driven: each finished task releases its dependents and starts what is ready.

        Done-callbacks instead of ``asyncio.wait`` in a loop keep the per-step cost flat; the
        coroutine only waits for the moment nothing is running any more.
        """
        self.coord.start()
        self._loop = asyncio.get_running_loop()
        self._idle = self._loop.create_future()
        self._pump()
        if self._tasks:
            await self._idle
        self.rec.flush()

    def _pump(self) -> None:
        running = self._tasks
        for name in self.coord.take_ready(self._limit - len(running)):
            task = self._loop.create_task(self._run_step(name))
            running[task] = name
            task.add_done_callback(self._task_done)
        if not running and not self._idle.done():
            self._idle.set_result(None)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # Always still tracked: this callback is registered before any gather() awaits the
        # task, and done callbacks run in registration order (nothing to check).
        self._tasks.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._fatal(exc)
        if self.coord.stopping:
            for other in self._tasks:
                other.cancel()
        self._pump()
        # A finished step's outcome is held for the next steps' start (one write for both,
        # runbook.recorder); the tasks just started get to take it first (their batch, when
        # they are several: runbook.grouping), and whatever this step left held then is
        # written on the next turn of the loop, before anything else.
        self._loop.call_soon(self._flush, self.rec.holds)

    def _flush(self, upto: int) -> None:
        if self._group and self._starts.open:  # its write, due on this turn or the next,
            return  # carries what is held
        try:
            self.rec.flush(upto)
        except (AuditError, StoreError):  # reported through _fatal: stop what is running
            for task in self._tasks:
                task.cancel()
            self._pump()

    async def _cancel_running(self) -> None:
        running = list(self._tasks)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        self._tasks.clear()

    # -- one step -------------------------------------------------------------------------------

    def _kwargs(self, args: tuple[Arg, ...]) -> dict[str, Any] | str:
        """Arguments for a call, or the reason the step must be skipped."""
        blocked = self.coord.blocked_by(args)
        if blocked is not None:
            return blocked
        out = {}
        results, outputs, scope = self.results, self.outputs, self.s.scope
        for arg in args:
            source = arg.source
            if source == "step":
                if results[arg.key].status == R.STEP_SUCCEEDED:
                    out[arg.name] = outputs.get(arg.key)
                else:
                    out[arg.name] = arg.default
            elif source == "name":
                out[arg.name] = scope.get(arg.key)
            else:
                out[arg.name] = arg.default
        return out

    def _finish(
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

    def _skip(self, name: str, reason: str) -> None:
        self.coord.on_skipped(name, reason)
        self._finish(name, event="step_skipped", data={"reason": reason})

    def _fail(self, name: str, error: str, data: dict[str, Any]) -> None:
        self.coord.on_failed(name)
        self._finish(name, error=error, event="step_failed", data=data)

    async def _run_step(self, name: str) -> None:
        step, coord, dry = self.steps[name], self.coord, self.s.dry_run
        CURRENT_STEP.set(name)
        kwargs = self._kwargs(step.args)
        # --dry-run: inputs that are only "planned" still let a probe-only when= be evaluated.
        planned = dry and isinstance(kwargs, str) and kwargs.endswith(R.PLANNED)
        if isinstance(kwargs, str) and not planned:
            return self._skip(name, kwargs)
        when = step.options.when  # when_args are the arguments of when=: both or neither
        if when is not None and step.when_args is not None:
            if dry and any(
                a.source == "step" and self.steps[a.key].kind != "probe" for a in step.when_args
            ):
                coord.on_planned(name, "when: decided at run time")
                return self._finish(name)
            when_kwargs = self._kwargs(step.when_args)
            if isinstance(when_kwargs, str):
                return self._skip(name, when_kwargs)
            try:
                decision = when(**when_kwargs)
            except (Exception, SystemExit) as exc:
                text = error_text(exc)
                return self._fail(name, f"when= raised {text}", {"error": text})
            if not decision:
                return self._skip(name, "when")
        if planned or (dry and step.kind != "probe"):
            coord.on_planned(
                name, f"would run{' (approval gate)' if step.options.approval else ''}"
            )
            return self._finish(name)
        assert isinstance(kwargs, dict)
        if step.options.approval is not None and not dry:
            verdict = self.s.approvals.check(name, step.options.approval, self)
            if verdict == "denied":
                coord.on_denied(name)
                self._finish(name)
                self._fatal(RunbookError(f"approval for {name!r} was denied"))
                return
            if verdict == "pending":
                why = gate_reason(step.options.approval, kwargs)
                if coord.on_awaiting(name, why):
                    data = self.s.approvals.request_data(name, step.options.approval)
                    self._finish(
                        name,
                        event="approval_requested",
                        data={**data, "reason": why} if why else data,
                    )
                return
        lock_name = self._template(step.options.lock) if step.options.lock else None
        locks = self.s.locks
        if lock_name and locks:
            try:
                await self._acquire([lock_name], name)
            except LockHeld as exc:
                self.lock_denied = str(exc)
                return self._fail(name, str(exc), {"error": str(exc)})
        token = self._token(lock_name)
        if token is not None:
            FENCING_TOKEN.set(token)
        try:
            await self._attempts(step, kwargs, token, lock_name)
        finally:
            if lock_name and locks:
                with contextlib.suppress(AuditError, StoreError):  # reported through _fatal
                    self.rec.flush()  # the outcome is durable before the lock is free
                self.rec.locks_released(await locks.release([lock_name]), name, stop=True)

    def _token(self, lock_name: str | None) -> int | None:
        locks = self.s.locks
        if locks is None:
            return None
        for candidate in (lock_name, self._run_lock):
            if candidate and (lease := locks.lease_of(candidate)) is not None:
                return lease.token
        return None

    async def _attempts(
        self, step: StepDef, kwargs: dict[str, Any], token: int | None, lock_name: str | None
    ) -> None:
        name, res, coord, clock = step.name, self.results[step.name], self.coord, self.clock
        locks, guarded = self.s.locks, (lock_name, self._run_lock)
        LOG.set(res.log)  # what the step logs through ``log`` is kept with its outcome
        attempt = 0
        while True:
            attempt += 1
            coord.on_started(name, attempt)
            res.started_at = res.started_at or clock.now()
            exc: BaseException | None = None
            output: Any = None  # read only when the attempt returned (exc is None)
            started, began = False, 0.0
            try:
                # Durable before the side effects start; with the others launched with it.
                if self._group and len(self._tasks) > 1:
                    await self._starts.join(res, attempt)
                else:
                    self.rec.step_started(res, attempt)
                started, began = True, clock.monotonic()
                output = await self._traced(
                    Attempt(
                        self.s.info.run_id,
                        name,
                        step.func,
                        kwargs,
                        step.is_async,
                        step.options.timeout,
                        attempt,
                        token,
                    )
                )
            except asyncio.CancelledError:
                lost = self._lost.pop(name, None)
                if lost is None:
                    coord.on_cancelled(name)
                    self._finish(name, event="step_failed", data={"error": "cancelled"})
                    raise
                _uncancel()
                exc = lost
                began = began or clock.monotonic()  # lost while its start was being written
            except Exception as error:
                if not started:  # its start was not recorded: nothing ran, the run stops
                    res.status, res.reason = R.STEP_CANCELLED, NOT_STARTED
                    self._not_started.append(name)
                    raise
                exc = error
            if locks is not None and (gone := locks.check(guarded)) is not None:
                exc = gone  # the lease ran out at some moment of the step: its outcome is void
            if exc is None:
                exc = output_problem(name, output)
            if exc is None:
                res.output = output
                self.outputs[name] = output
                coord.on_succeeded(name)
                duration_ms = round((clock.monotonic() - began) * 1000, 3)
                data = {"output": output, "attempt": attempt, "duration_ms": duration_ms}
                if res.log:
                    data["log"] = list(res.log)
                return self._finish(name, event="step_succeeded", data=data)
            text = error_text(exc)
            if coord.should_retry(name, attempt, lease_lost=isinstance(exc, LeaseLost)):
                delay = coord.backoff(name, attempt, self.s.rng.random())
                data = {"attempt": attempt, "error": text, "delay": round(delay, 3)}
                self.emit("step_retried", name, data)
                await clock.asleep(delay)
                continue
            why = describe_failure(exc, self.rb.path, self.s.redactor.text)
            exc = None  # its traceback holds this frame: kept, the two would be a cycle
            res.traceback, res.where, res.stderr = why.traceback, why.where, why.stderr
            duration_ms = round((clock.monotonic() - began) * 1000, 3)
            data = {
                "error": text,
                "attempt": attempt,
                "traceback": why.traceback,
                "duration_ms": duration_ms,
            }
            data.update({k: v for k, v in (("where", why.where), ("stderr", why.stderr)) if v})
            if res.log:
                data["log"] = list(res.log)
            return self._fail(name, text, data)

    async def _traced(self, attempt: Attempt) -> Any:
        """One attempt inside its ``runbook.step`` span, a child of the run's: commands and
        requests the step makes carry this span's trace context (runbook.tracing)."""
        if not tracing.enabled():  # no OpenTelemetry API installed: no span to open
            return await self.executor.run(attempt)
        info = self.s.info
        with tracing.attempt_span(info.run_id, attempt.step, info.env, attempt.attempt) as span:
            try:
                output = await self.executor.run(attempt)
            except BaseException as exc:
                span.set_status("failed", error_text(exc))
                raise
            span.set_status("succeeded")
            return output

    # -- locks ----------------------------------------------------------------------------------

    async def _acquire(self, names: list[str], step: str | None) -> None:
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
        for task, step in list(self._tasks.items()):
            lock = self.steps[step].options.lock
            if name == self._run_lock or (lock and self._template(lock) == name):
                self._lost[step] = exc
                task.cancel()

    # -- rollback -------------------------------------------------------------------------------

    async def _rollback_all(self) -> None:
        """Undo, shielded: a cancellation (a Ctrl-C arriving now) never abandons a rollback
        half-way, which is the one thing worse than waiting for it."""
        undo = asyncio.ensure_future(self._undo_all())
        while True:
            try:
                return await asyncio.shield(undo)
            except asyncio.CancelledError:
                if undo.done():  # it ended too (SystemExit stopped the loop): let this through
                    raise
                _uncancel()  # the undo goes on; this task waits for it again

    async def _undo_all(self) -> None:
        coord = self.coord
        coord.begin_rollback()
        while (name := coord.next_rollback()) is not None:
            await self._rollback(name)

    async def _rollback(self, name: str) -> None:
        step, coord = self.steps[name], self.coord
        rb = step.rollback
        assert rb is not None
        res = self.results[name]
        CURRENT_STEP.set(name)
        coord.on_rollback_started(name)
        self.rec.rollback_started(res)
        if self.executor.still_running(name):
            # Undoing while the step's thread is still doing would race it: give the thread the
            # step's timeout again to finish, then leave the undo to a human.
            grace = min(60.0, max(5.0, step.options.timeout or 0.0))
            if not await self.executor.wait_stopped(name, grace):
                text = (
                    f"step {name!r} is still running in its worker thread {grace:g}s after "
                    "its timeout; not rolled back: check it and undo by hand"
                )
                coord.on_rollback_failed(name, text)
                return self.rec.rollback_finished(res)
        kwargs: dict[str, Any] = {}
        output = self.outputs.get(name)
        for arg in rb.args:
            if arg.source == "extra":  # group steps receive their own output as ``output``
                kwargs[arg.name] = output
            elif arg.source == "step":
                kwargs[arg.name] = self.outputs.get(
                    arg.key, arg.default if arg.has_default else None
                )
            elif arg.source == "name":
                kwargs[arg.name] = self.s.scope.get(arg.key)
            else:
                kwargs[arg.name] = arg.default
        attempt = Attempt(
            self.s.info.run_id,
            name,
            rb.func,
            kwargs,
            rb.is_async,
            step.options.timeout,
            rollback=True,
        )
        try:
            await self.executor.run(attempt)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            # RollbackHalted: undoing more would make things worse; the rest is left to a human.
            halt = isinstance(exc, RollbackHalted)
            coord.on_rollback_failed(name, self.s.redactor.text(error_text(exc)), halt=halt)
        else:
            coord.on_rolled_back(name)
        self.rec.rollback_finished(res)

    # -- the end --------------------------------------------------------------------------------

    def release(self) -> None:
        """Once the run is over: the recorder no longer calls back into this execution (that
        reference made a cycle, left to the cyclic collector; runbook.runner)."""
        self.rec.on_fatal = _after_the_run

    async def _teardown(self, *, paused: bool) -> None:
        with contextlib.suppress(AuditError, StoreError):  # reported through _fatal
            self.rec.flush()
        locks = self.s.locks
        if locks is not None:
            if paused and self.s.keep_lock_when_paused and self._run_lock:
                # Keep the run lock across the pause: extend it so it outlives this process.
                with contextlib.suppress(Exception):  # serialised with the keeper's renewals
                    await locks.extend([self._run_lock], self.s.paused_lease)
                others = [lease.name for lease in locks.held() if lease.name != self._run_lock]
                self.rec.locks_released(await locks.release(others), None, stop=False)
            else:
                self.rec.locks_released(await locks.release_all(), None, stop=False)
            await locks.aclose()
        for error in self.s.scope.close():
            import logging

            logging.getLogger("runbook").warning(self.s.redactor.text(error))
        await self.executor.aclose()
