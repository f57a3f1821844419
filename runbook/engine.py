"""The scheduler: runs one run of a collected runbook as an asyncio DAG.

One ``Execution`` per run. Steps whose predecessors are done are started as tasks, up to
``max_parallel`` at once; sync steps run in a worker thread, ``async def`` steps on the loop. A step
is skipped when its ``when`` is false or a data dependency was skipped (unless the parameter has a
default). On a required failure scheduling stops, running steps are cancelled, and rollbacks run:
the failed (or interrupted) steps' own first, then the completed reversible steps in reverse order
of completion. State reaches the store before a step's side effects start and after they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from random import Random
from typing import Any

from runbook import result as R
from runbook.approvals import ApprovalPolicy
from runbook.clock import CANCEL, DEADLINE, Clock
from runbook.collect import Arg, Runbook, StepDef
from runbook.context import CURRENT_STEP, FENCING_TOKEN, RunInfo
from runbook.errors import (
    AuditError,
    LeaseLost,
    LockHeld,
    RollbackHalted,
    RunbookError,
    StepTimeout,
    StoreError,
)
from runbook.failure import LOG
from runbook.failure import describe as describe_failure
from runbook.locks.base import Lease, expand_name
from runbook.locks.manager import LockManager, since
from runbook.recorder import Recorder
from runbook.redact import Redactor
from runbook.result import RunResult, StepResult
from runbook.scope import ResourceScope
from runbook.store.base import RunStore, StepRecord
from runbook.values import output_problem

_NOTHING = object()
# A stored output that contained a secret: ``{REDACTED_KEY: True, "value": <masked>}``.
REDACTED_KEY = "__runbook_redacted__"


def is_redacted(output: Any) -> bool:
    return isinstance(output, dict) and output.get(REDACTED_KEY) is True


_PLAIN = frozenset({type(None), bool, int, float, str})


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
    max_parallel: int = 8
    dry_run: bool = False
    prior: dict[str, StepRecord] = field(default_factory=dict)
    rerun_interrupted: frozenset[str] = frozenset()
    skip_interrupted: frozenset[str] = frozenset()
    rng: Random = field(default_factory=Random)
    keep_lock_when_paused: bool = True
    paused_lease: float = 7 * 24 * 3600.0
    deny_only: bool = False  # deny/cancel: schedule nothing new, just settle and roll back
    cancel: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)
    resumed_by: str | None = None  # who resumed/denied/cancelled, when not the run's actor
    decisions: dict[str, str] = field(default_factory=dict)  # interrupted step -> retry/skip
    started: dict[str, Any] = field(default_factory=dict)  # extra run_started data (retry_of)
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
        return f"(reason unavailable: {_error_text(exc)})"


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Execution:
    def __init__(self, setup: RunSetup) -> None:
        self.s = setup
        self.rb = setup.runbook
        self.steps = self.rb.steps
        self.clock = setup.clock
        self.results: dict[str, StepResult] = {
            name: StepResult(name, kind=step.kind) for name, step in self.steps.items()
        }
        self.outputs = setup.outputs
        self.completed: list[str] = []  # reversible steps in order of completion
        self.failed: list[str] = []  # required steps that failed or were cut off mid-way
        self.failing = False
        self._halted = False  # a rollback raised RollbackHalted: stop rolling back
        self.cancelled = setup.cancel
        self.fatal: BaseException | None = None
        self.lock_denied: str | None = None
        self.paused = False
        self._seq = 0
        self._tasks: dict[asyncio.Task[None], str] = {}
        self._lost: dict[str, Exception] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._want = setup.hooks_wanted
        self._run_lock: str | None = None
        # Sync steps that timed out while their thread still runs (threads cannot be killed).
        self._stragglers: dict[str, Any] = {}
        # Nothing listens (no sink, no hook, no notifier): skip building events at all.
        self._quiet = not setup.recorder.sinks and not setup.recorder.listeners
        self._done_like: frozenset[str] = frozenset()

    # -- plumbing -------------------------------------------------------------------------------

    def _hook(self, name: str, **kwargs: Any) -> None:
        if name in self._want:
            try:
                getattr(self.s.hook, name)(run=self.s.info, **kwargs)
            except Exception:  # a broken plugin hook must not break the run
                import logging

                logging.getLogger("runbook").exception("hook %s failed", name)

    def emit(
        self, kind: str, step: str | None = None, data: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        """Audit an event; a refused required sink makes the run fail before its next effect."""
        if self._quiet:
            return
        try:
            self.s.recorder.emit(kind, step, data, **kw)
        except AuditError as exc:
            self._fatal(exc)
            raise

    def _fatal(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.failing = True

    def _save(self, name: str) -> None:
        if self.s.store is None or self.s.dry_run:
            return
        res = self.results[name]
        output = res.output
        if self.s.redactor and output is not None and not is_redacted(output):
            masked = self.s.redactor(output)
            if masked != output:  # a secret is never stored: mark the output as incomplete
                output = {REDACTED_KEY: True, "value": masked}
        try:
            self.s.store.save_step(
                StepRecord(
                    run_id=self.s.info.run_id,
                    name=name,
                    status=res.status,
                    output=output,
                    error=res.error,
                    attempts=res.attempts,
                    started_at=res.started_at,
                    finished_at=res.finished_at,
                    duration=res.duration,
                    reason=res.reason,
                    completed_seq=self._seq if res.status == R.STEP_SUCCEEDED else None,
                )
            )
        except Exception as exc:
            err = (
                exc
                if isinstance(exc, StoreError)
                else StoreError(f"run store failed: {_error_text(exc)}")
            )
            self._fatal(err)
            raise err from None

    def _now(self) -> datetime:
        return self.clock.now()

    def _template(self, template: str) -> str:
        return expand_name(template, env=self.s.info.env, params=self.s.scope.get("params"))

    # -- the run --------------------------------------------------------------------------------

    async def execute(self) -> RunResult:
        info = self.s.info
        started = self._now()
        self._restore_prior()
        self._hook("runbook_run_started")
        try:
            try:
                if self.s.dry_run:
                    pass
                elif info.resumed:
                    self.emit(
                        "run_resumed",
                        None,
                        {
                            "resumed_by": self.s.resumed_by or info.actor,
                            "interrupted": self.s.decisions,
                            **self.s.resume_data,
                        },
                        actor=self.s.resumed_by,
                    )
                else:
                    self.emit(
                        "run_started", None, {"max_parallel": self.s.max_parallel, **self.s.started}
                    )
                if self.rb.lock and self.s.locks and not self.s.dry_run:
                    self._run_lock = self._template(self.rb.lock)
                    await self._acquire([self._run_lock], None)
                if not (self.s.deny_only or self.cancelled):
                    await self._schedule()
            except asyncio.CancelledError:
                self.cancelled = True
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                await self._cancel_running()
            except (AuditError, StoreError) as exc:
                self._fatal(exc)
            if (self.failing or self.cancelled) and not self.s.dry_run:
                await self._rollback_all()
        except LockHeld as exc:
            # Refused at the start (run lock, or the run lock again on resume): nothing ran.
            await self._teardown(paused=False)
            self._refused(exc)
            raise
        status = self._status()
        await self._teardown(paused=status == R.PAUSED)
        result = RunResult(
            run_id=info.run_id,
            status=status,
            runbook=info.runbook,
            env=info.env,
            actor=info.actor,
            steps=self.results,
            audit=self.s.recorder.events,
            error=self._first_error(),
            started_at=started,
            finished_at=self._now(),
            dry_run=self.s.dry_run,
            lock_denied=self.lock_denied,
            redactor=self.s.redactor,
        )
        if not self.s.dry_run:
            with contextlib.suppress(AuditError):
                if status == R.PAUSED:
                    waiting = [
                        n for n, r in self.results.items() if r.status == R.AWAITING_APPROVAL
                    ]
                    self.s.recorder.emit("run_paused", None, {"awaiting": waiting})
                if status == R.CANCELLED:
                    self.s.recorder.emit(
                        "run_cancelled",
                        None,
                        {"cancelled_by": self.s.resumed_by or info.actor, **self.s.settle_data},
                        actor=self.s.resumed_by,
                    )
                self.s.recorder.emit(
                    "run_finished",
                    None,
                    {
                        "status": status,
                        "error": result.error,
                        "duration_ms": round((result.duration or 0) * 1000, 3),
                    },
                )
            if self.s.store is not None:
                with contextlib.suppress(Exception):
                    self.s.store.update_run(info.run_id, status=status, error=result.error)
        self._hook("runbook_run_finished", result=result)
        return result

    def _refused(self, exc: LockHeld) -> None:
        """Leave the stored run in a state that says what happened and what can be done."""
        if self.s.dry_run or self.s.store is None:
            return
        info = self.s.info
        waiting = any(r.status == R.AWAITING_APPROVAL for r in self.results.values())
        with contextlib.suppress(Exception):
            if not info.resumed:
                self.s.store.update_run(info.run_id, status=R.FAILED, error=str(exc))
                self.s.recorder.emit("run_finished", None, {"status": R.FAILED, "error": str(exc)})
            elif waiting:  # still waiting for its gate: resumable as it was
                self.s.store.update_run(info.run_id, status=R.PAUSED)

    def _restore_prior(self) -> None:
        for name, rec in self.s.prior.items():
            if name not in self.results:
                continue
            res = self.results[name]
            output = rec.output["value"] if is_redacted(rec.output) else rec.output
            res.status, res.output, res.error = rec.status, output, rec.error
            res.attempts, res.started_at, res.finished_at = (
                rec.attempts,
                rec.started_at,
                rec.finished_at,
            )
            res.duration, res.reason = rec.duration, rec.reason
            if rec.status == R.STEP_SUCCEEDED:
                self.outputs[name] = output
            if name in self.s.rerun_interrupted:
                res.status = R.PENDING
            elif name in self.s.skip_interrupted:
                res.status, res.reason = R.SKIPPED, "skipped after interruption"
                self._save(name)
        done = [
            (r.completed_seq or 0, n)
            for n, r in self.s.prior.items()
            if r.status == R.STEP_SUCCEEDED
            and n in self.steps
            and self.steps[n].reversible
            and n not in self.s.rerun_interrupted
        ]
        self.completed = [n for _, n in sorted(done)]
        self._seq = max((r.completed_seq or 0 for r in self.s.prior.values()), default=0)
        if self.s.deny_only:
            for name, res in self.results.items():
                if res.status == R.AWAITING_APPROVAL and name in self.s.failed_gates:
                    res.status, res.error = R.STEP_FAILED, self.s.failed_gates[name]
                    self.failed.append(name)
                    self.failing = True
                    self._save(name)
                    self.emit("step_failed", name, {"error": res.error})
                elif res.status == R.AWAITING_APPROVAL:
                    if self.cancelled:
                        res.status, res.reason = R.STEP_CANCELLED, "run cancelled"
                    else:
                        res.status, res.reason = R.DENIED, "approval denied"
                        self.failing = True
                    self._save(name)
                elif res.status == R.STEP_RUNNING:  # crashed mid-step, now cancelled
                    res.status = R.STEP_CANCELLED
                    self.failed.append(name)

    def _status(self) -> str:
        if self.s.dry_run:
            return R.SUCCEEDED
        rolled = [r for r in self.results.values() if r.status == R.STEP_ROLLED_BACK]
        rb_failed = [r for r in self.results.values() if r.status == R.STEP_ROLLBACK_FAILED]
        if rb_failed:
            return R.ROLLBACK_FAILED
        if self.cancelled:
            return R.CANCELLED
        if self.failing:
            return R.ROLLED_BACK if rolled else R.FAILED
        if any(r.status == R.AWAITING_APPROVAL for r in self.results.values()):
            return R.PAUSED
        return R.SUCCEEDED

    def _first_error(self) -> str | None:
        if self.fatal is not None:
            return self.s.redactor.text(_error_text(self.fatal))
        for name in self.failed:
            if self.results[name].error:
                return f"{name}: {self.results[name].error}"
        for name, res in self.results.items():
            if res.status == R.DENIED:
                return f"{name}: approval denied"
        return None

    # -- scheduling -----------------------------------------------------------------------------

    async def _schedule(self) -> None:
        """Event-driven: each finished task releases its dependents and starts what is ready.

        Done-callbacks instead of ``asyncio.wait`` in a loop keep the per-step cost flat; the
        coroutine only waits for the moment nothing is running any more.
        """
        done_like = R.DONE_STATUSES | {R.STEP_FAILED, R.STEP_CANCELLED, R.PLANNED}
        self._done_like = done_like
        waiting: dict[str, int] = {}
        self._dependents = self.rb.dependents()
        ready: deque[str] = deque()
        for name, step in self.steps.items():
            if self.results[name].status in done_like:
                continue  # an awaiting gate is not done: it is re-checked once its inputs are
            count = sum(1 for p in step.predecessors if self.results[p].status not in done_like)
            waiting[name] = count
            if count == 0:
                ready.append(name)
        self._waiting, self._ready = waiting, ready
        self._limit = max(1, self.s.max_parallel)
        self._loop = asyncio.get_running_loop()
        self._idle = self._loop.create_future()
        self._pump()
        if self._tasks:
            await self._idle

    def _pump(self) -> None:
        ready, running = self._ready, self._tasks
        while ready and not (self.failing or self.cancelled) and len(running) < self._limit:
            name = ready.popleft()
            task = self._loop.create_task(self._run_step(name))
            running[task] = name
            task.add_done_callback(self._task_done)
        if not running and not self._idle.done():
            self._idle.set_result(None)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        name = self._tasks.pop(task, None)
        if name is None:
            return
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._fatal(exc)
        if self.results[name].status in self._done_like:
            waiting = self._waiting
            for dep in self._dependents[name]:
                if dep in waiting:
                    waiting[dep] -= 1
                    if waiting[dep] == 0:
                        self._ready.append(dep)
        if self.failing or self.cancelled:
            for other in self._tasks:
                other.cancel()
        self._pump()

    async def _cancel_running(self) -> None:
        running = list(self._tasks)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        self._tasks.clear()

    # -- one step -------------------------------------------------------------------------------

    def _value(self, arg: Arg) -> Any:
        if arg.source == "step":
            res = self.results.get(arg.key)
            if res is not None and res.status == R.STEP_SUCCEEDED:
                return self.outputs.get(arg.key)
            return arg.default if arg.has_default else _NOTHING
        if arg.source == "name":
            return self.s.scope.get(arg.key)
        return arg.default

    def _kwargs(self, args: tuple[Arg, ...]) -> dict[str, Any] | str:
        """Arguments for a call, or the reason the step must be skipped."""
        out = {}
        for arg in args:
            value = self._value(arg)
            if value is _NOTHING:
                status = self.results[arg.key].status
                return f"{arg.key} {'failed' if status == R.STEP_FAILED else status}"
            out[arg.name] = value
        return out

    def _finish(
        self,
        name: str,
        status: str,
        *,
        reason: str | None = None,
        error: str | None = None,
        event: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        res = self.results[name]
        res.status, res.reason = status, reason
        if error is not None:
            res.error = self.s.redactor.text(error)
        if res.started_at is not None and status != R.AWAITING_APPROVAL:
            res.finished_at = self._now()
            res.duration = (res.finished_at - res.started_at).total_seconds()
        if status == R.STEP_SUCCEEDED:
            self._seq += 1
        self._save(name)
        if event:
            self.emit(event, name, data)
        self._hook("runbook_step_finished", step=name, result=res)

    async def _run_step(self, name: str) -> None:
        step = self.steps[name]
        res = self.results[name]
        CURRENT_STEP.set(name)
        kwargs = self._kwargs(step.args)
        # --dry-run: inputs that are only "planned" still let a probe-only when= be evaluated.
        planned = self.s.dry_run and isinstance(kwargs, str) and kwargs.endswith(R.PLANNED)
        if isinstance(kwargs, str) and not planned:
            self._finish(
                name, R.SKIPPED, reason=kwargs, event="step_skipped", data={"reason": kwargs}
            )
            return
        if step.when_args is not None:
            if self.s.dry_run and any(
                a.source == "step" and self.steps[a.key].kind != "probe" for a in step.when_args
            ):
                self._finish(name, R.PLANNED, reason="when: decided at run time")
                return
            when_kwargs = self._kwargs(step.when_args)
            if isinstance(when_kwargs, str):
                self._finish(
                    name,
                    R.SKIPPED,
                    reason=when_kwargs,
                    event="step_skipped",
                    data={"reason": when_kwargs},
                )
                return
            try:
                decision = step.options.when(**when_kwargs)
            except Exception as exc:
                self._finish(
                    name,
                    R.STEP_FAILED,
                    error=f"when= raised {_error_text(exc)}",
                    event="step_failed",
                    data={"error": _error_text(exc)},
                )
                self._on_failure(name)
                return
            if not decision:
                self._finish(
                    name, R.SKIPPED, reason="when", event="step_skipped", data={"reason": "when"}
                )
                return
        if planned or (self.s.dry_run and step.kind != "probe"):
            gate = " (approval gate)" if step.options.approval else ""
            self._finish(name, R.PLANNED, reason=f"would run{gate}")
            return
        assert isinstance(kwargs, dict)
        if step.options.approval is not None and not self.s.dry_run:
            verdict = self.s.approvals.check(name, step.options.approval, self)
            if verdict == "denied":
                self._finish(name, R.DENIED, reason="approval denied")
                self._fatal(RunbookError(f"approval for {name!r} was denied"))
                return
            if verdict == "pending":
                if res.status != R.AWAITING_APPROVAL:
                    data = self.s.approvals.request_data(name, step.options.approval)
                    why = gate_reason(step.options.approval, kwargs)
                    self._finish(
                        name,
                        R.AWAITING_APPROVAL,
                        reason=why or "awaiting approval",
                        event="approval_requested",
                        data={**data, "reason": why} if why else data,
                    )
                return
        lock_name = self._template(step.options.lock) if step.options.lock else None
        if lock_name and self.s.locks:
            try:
                await self._acquire([lock_name], name)
            except LockHeld as exc:
                self.lock_denied = str(exc)
                self._finish(
                    name,
                    R.STEP_FAILED,
                    error=str(exc),
                    event="step_failed",
                    data={"error": str(exc)},
                )
                self._on_failure(name)
                return
        token = self._token(lock_name)
        if token is not None:
            FENCING_TOKEN.set(token)
        try:
            await self._attempts(step, kwargs)
        finally:
            if lock_name and self.s.locks:
                released = await self.s.locks.release([lock_name])
                for lease in released:
                    with contextlib.suppress(AuditError):
                        self.emit(
                            "lock_released",
                            name,
                            {"lock": lease.name, "fencing_token": lease.token},
                        )

    def _token(self, lock_name: str | None) -> int | None:
        locks = self.s.locks
        if locks is None:
            return None
        for candidate in (lock_name, self._run_lock):
            if candidate and (lease := locks.lease_of(candidate)) is not None:
                return lease.token
        return None

    async def _attempts(self, step: StepDef, kwargs: dict[str, Any]) -> None:
        name, res, opts = step.name, self.results[step.name], step.options
        attempts = opts.retries + 1
        LOG.set(res.log)  # what the step logs through ``log`` is kept with its outcome
        for attempt in range(1, attempts + 1):
            res.attempts = attempt
            res.status = R.STEP_RUNNING
            res.started_at = res.started_at or self._now()
            self._save(name)  # before the side effects start
            self.emit("step_started", name, {"attempt": attempt})
            self._hook("runbook_step_started", step=name, attempt=attempt)
            began = self.clock.monotonic()
            exc: BaseException | None = None
            try:
                output = await self._call(step, kwargs)
            except asyncio.CancelledError:
                lost = self._lost.pop(name, None)
                if lost is None:
                    self._finish(
                        name,
                        R.STEP_CANCELLED,
                        reason="cancelled",
                        event="step_failed",
                        data={"error": "cancelled"},
                    )
                    if step.reversible:
                        self.failed.append(name)
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                exc = lost
            except Exception as error:
                exc = error
            if exc is None:
                exc = output_problem(name, output)
            if exc is None:
                res.output = output
                self.outputs[name] = output
                if step.reversible:
                    self.completed.append(name)
                duration_ms = round((self.clock.monotonic() - began) * 1000, 3)
                data = {"output": output, "attempt": attempt, "duration_ms": duration_ms}
                if res.log:
                    data["log"] = list(res.log)
                self._finish(name, R.STEP_SUCCEEDED, event="step_succeeded", data=data)
                return
            text = _error_text(exc)
            retryable = attempt < attempts and not isinstance(exc, LeaseLost)
            if retryable:
                delay = self._backoff(opts.backoff, opts.backoff_max, attempt)
                self.emit(
                    "step_retried",
                    name,
                    {"attempt": attempt, "error": text, "delay": round(delay, 3)},
                )
                await self.clock.asleep(delay)
                continue
            why = describe_failure(exc, self.rb.path, self.s.redactor.text)
            res.traceback, res.where, res.stderr = why.traceback, why.where, why.stderr
            data = {
                "error": text,
                "attempt": attempt,
                "traceback": why.traceback,
                "duration_ms": round((self.clock.monotonic() - began) * 1000, 3),
            }
            data.update({k: v for k, v in (("where", why.where), ("stderr", why.stderr)) if v})
            if res.log:
                data["log"] = list(res.log)
            self._finish(name, R.STEP_FAILED, error=text, event="step_failed", data=data)
            self._on_failure(name)
            return

    def _on_failure(self, name: str) -> None:
        if self.steps[name].options.required:
            self.failed.append(name)
            self.failing = True

    def _backoff(self, base: float, cap: float, attempt: int) -> float:
        """Capped exponential backoff with equal jitter: half fixed, half random."""
        delay = min(cap, base * (2 ** (attempt - 1)))
        return delay / 2 + self.s.rng.random() * delay / 2

    async def _call(
        self,
        step: StepDef | Any,
        kwargs: dict[str, Any],
        *,
        func: Callable[..., Any] | None = None,
        is_async: bool | None = None,
        timeout: float | None = None,
    ) -> Any:
        func = func or step.func
        is_async = step.is_async if is_async is None else is_async
        timeout = step.options.timeout if timeout is None else timeout
        thread_future = None
        if timeout:
            DEADLINE.set((self.clock.monotonic() + timeout, step.name, timeout))
        try:
            if is_async:
                coro = func(**kwargs)
                return await (asyncio.wait_for(coro, timeout) if timeout else coro)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(1, self.s.max_parallel), thread_name_prefix="runbook-step"
                )
            import contextvars

            cancel = threading.Event()  # clock.sleep() in the thread ends when this is set
            token = CANCEL.set(cancel)
            try:
                call = functools.partial(contextvars.copy_context().run, func, **kwargs)
            finally:
                CANCEL.reset(token)
            thread_future = self._executor.submit(call)
            future = asyncio.wrap_future(thread_future)
            try:
                return await (asyncio.wait_for(future, timeout) if timeout else future)
            except TimeoutError:
                cancel.set()  # timed out: the straggling thread's clock waits stop now
                raise
            except asyncio.CancelledError:
                cancel.set()  # cancelled: a clock.sleep() in the thread ends at once
                # A thread cannot be interrupted: let the step return before rollbacks start,
                # so an undo never races the half-done thing it undoes.
                if not thread_future.done():
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(asyncio.wrap_future(thread_future))
                raise
        except TimeoutError as exc:
            # Only wait_for running out means the step's own timeout fired; a TimeoutError the
            # step raised itself (a probe's WaitTimeout, say) keeps its own message.
            if (
                isinstance(exc, StepTimeout)
                or not timeout
                or not isinstance(exc.__cause__, asyncio.CancelledError)
            ):
                raise
            if not is_async and thread_future is not None and not thread_future.done():
                self._stragglers[step.name] = thread_future
            raise StepTimeout(f"step {step.name!r} timed out after {timeout:g}s") from None
        finally:
            if timeout:
                DEADLINE.set(None)

    # -- locks ----------------------------------------------------------------------------------

    async def _acquire(self, names: list[str], step: str | None) -> None:
        locks = self.s.locks
        assert locks is not None
        try:
            leases = await locks.acquire(names)
        except LockHeld as exc:
            with contextlib.suppress(AuditError):
                self.emit(
                    "lock_denied",
                    step,
                    {
                        "lock": exc.name,
                        "holder": exc.holder,
                        "holder_actor": exc.actor,
                        "since": exc.since,
                    },
                )
            raise
        for lease in leases:
            self.emit("lock_acquired", step, {"lock": lease.name, "fencing_token": lease.token})

    def on_lock_wait(self, name: str, lease: Lease | None, waited: float) -> None:
        """Progress while waiting for a lock: who holds it and since when."""
        if lease is None:
            message = f"waiting for lock {name}"
        else:
            who = f"run {lease.owner}" + (f" ({lease.actor})" if lease.actor else "")
            message = f"waiting for lock {name} held by {who} since {since(lease)}"
        self._hook("runbook_progress", step=None, message=message, fraction=None)

    def on_lease_lost(self, name: str, exc: Exception) -> None:
        """Called by the LockManager: fail the steps the lock protected instead of going on."""
        for task, step in list(self._tasks.items()):
            lock = self.steps[step].options.lock
            if name == self._run_lock or (lock and self._template(lock) == name):
                self._lost[step] = exc
                task.cancel()

    # -- rollback -------------------------------------------------------------------------------

    async def _rollback_all(self) -> None:
        order = [n for n in dict.fromkeys(self.failed) if self.steps[n].rollback is not None]
        order += [
            n
            for n in reversed(self.completed)
            if n not in order
            and self.steps[n].rollback is not None
            and self.results[n].status == R.STEP_SUCCEEDED
        ]
        for name in order:
            await self._rollback(name)
            if self._halted:  # undoing more would make things worse: leave it to a human
                break

    async def _rollback(self, name: str) -> None:
        step = self.steps[name]
        rb = step.rollback
        assert rb is not None
        res = self.results[name]
        CURRENT_STEP.set(name)
        with contextlib.suppress(AuditError):
            self.s.recorder.emit("rollback_started", name, {"after": res.status})
        straggler = self._stragglers.get(name)
        if straggler is not None and not straggler.done():
            # Undoing while the step's thread is still doing would race it: give the thread the
            # step's timeout again to finish, then leave the undo to a human.
            grace = min(60.0, max(5.0, step.options.timeout or 0.0))
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(straggler)), grace)
            if not straggler.done():
                text = (
                    f"step {name!r} is still running in its worker thread {grace:g}s after "
                    "its timeout; not rolled back: check it and undo by hand"
                )
                res.status, res.rollback_error = R.STEP_ROLLBACK_FAILED, text
                with contextlib.suppress(Exception):
                    self._save(name)
                with contextlib.suppress(AuditError):
                    self.s.recorder.emit("rollback_failed", name, {"error": text})
                self._hook("runbook_rollback_finished", step=name, result=res)
                return
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
        try:
            await self._call(step, kwargs, func=rb.func, is_async=rb.is_async)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self._halted = self._halted or isinstance(exc, RollbackHalted)
            text = self.s.redactor.text(_error_text(exc))
            res.status, res.rollback_error = R.STEP_ROLLBACK_FAILED, text
            with contextlib.suppress(Exception):
                self._save(name)
            with contextlib.suppress(AuditError):
                self.s.recorder.emit("rollback_failed", name, {"error": text})
        else:
            res.status = R.STEP_ROLLED_BACK
            with contextlib.suppress(Exception):
                self._save(name)
            with contextlib.suppress(AuditError):
                self.s.recorder.emit("rollback_succeeded", name, {})
        self._hook("runbook_rollback_finished", step=name, result=res)

    # -- the end --------------------------------------------------------------------------------

    async def _teardown(self, *, paused: bool) -> None:
        locks = self.s.locks
        if locks is not None:
            if paused and self.s.keep_lock_when_paused and self._run_lock:
                # Keep the run lock across the pause: extend it so it outlives this process.
                with contextlib.suppress(Exception):  # serialised with the keeper's renewals
                    await locks.extend([self._run_lock], self.s.paused_lease)
                others = [lease.name for lease in locks.held() if lease.name != self._run_lock]
                for lease in await locks.release(others):
                    with contextlib.suppress(AuditError):
                        self.s.recorder.emit(
                            "lock_released",
                            None,
                            {"lock": lease.name, "fencing_token": lease.token},
                        )
                await locks.aclose()
            else:
                for lease in await locks.release_all():
                    with contextlib.suppress(AuditError):
                        self.s.recorder.emit(
                            "lock_released",
                            None,
                            {"lock": lease.name, "fencing_token": lease.token},
                        )
                await locks.aclose()
        for error in self.s.scope.close():
            import logging

            logging.getLogger("runbook").warning(self.s.redactor.text(error))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
