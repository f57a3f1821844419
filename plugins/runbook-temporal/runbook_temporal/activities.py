"""The activities: everything of a run that touches the world, done in a worker.

``attempt`` runs one attempt of one step on the step's task queue and does that attempt's durable
writes (the store row before the side effects start and after they end, the audit events, the
step's lock); ``undo`` runs one rollback. The run's own bookkeeping (its start, gates, decisions,
its end) is in ``runbook_temporal.bookkeeping``.
An activity heartbeats while it works, so a worker that dies is noticed within the heartbeat
timeout; none is ever retried by Temporal: whether an interrupted step runs again is runbook's
decision (DESIGN 3), taken in the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import traceback
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import result as R
from runbook import tracing
from runbook.collect import Arg, StepDef
from runbook.context import CURRENT_STEP, FENCING_TOKEN
from runbook.errors import AuditError, LeaseLost, LockHeld
from runbook.executors import Attempt
from runbook.executors.local import LocalExecutor
from runbook.locks.base import expand_name
from runbook.locks.manager import LockManager
from runbook.recorder import error_text
from runbook.redact import is_redacted, stored_output
from runbook.result import StepResult
from runbook.values import when_verdict
from runbook_temporal import messages as M
from runbook_temporal.runtime import BankedClock, Refused, RunContext, WorkerRuns

T = TypeVar("T")
_PLAIN = frozenset({type(None), bool, int, float, str})
PAUSED_LEASE = 7 * 24 * 3600.0  # the run lock outlives any worker: the workflow releases it


def _fatal(exc: BaseException) -> ApplicationError:
    """A failure of runbook's own machinery (store, audit, refused checkout): the run fails."""
    kind = "Refused" if isinstance(exc, Refused) else type(exc).__name__
    return ApplicationError(error_text(exc), type=kind, non_retryable=True)


async def _heartbeating(work: Awaitable[T]) -> T:
    """Await ``work`` while heartbeating, so the server notices if this worker dies."""
    info = activity.info()
    every = (info.heartbeat_timeout.total_seconds() / 3) if info.heartbeat_timeout else None
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            activity.heartbeat()
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise


def _unmasked(value: Any) -> Any:
    """An output stored masked (it held a secret) is passed on as its masked value."""
    return value["value"] if is_redacted(value) else value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class Activities:
    """The activity implementations of one worker process."""

    def __init__(self, runs: WorkerRuns, concurrency: int = 100) -> None:
        self.runs = runs
        self.runner = runs.runner
        # One pool of step threads for the worker (runbook's local executor: timeouts, and a
        # cancelled attempt waits for its thread before the workflow hears of it).
        self.executor = LocalExecutor(clock=self.runner.clock, max_parallel=concurrency)

    def all(self) -> list[Callable[..., Any]]:
        return [self.attempt, self.undo]

    # -- helpers ----------------------------------------------------------------------------

    def _store(self) -> Any:
        return self.runner.store

    def _kwargs(
        self, rc: RunContext, args: tuple[Arg, ...], inputs: dict[str, Any]
    ) -> dict[str, Any] | str:
        """Arguments for a call, or the reason the step must be skipped (an input is missing)."""
        out = {}
        for arg in args:
            if arg.source == "step":
                if arg.key in inputs:
                    out[arg.name] = _unmasked(inputs[arg.key])
                elif arg.has_default:
                    out[arg.name] = arg.default
                else:
                    return f"{arg.key} skipped"
            elif arg.source == "name":
                out[arg.name] = rc.scope.get(arg.key)
            else:
                out[arg.name] = arg.default
        return out

    def _locks(self, rc: RunContext, lease: float, timeout: float) -> LockManager | None:
        provider = self.runner.lock_provider
        if provider is None:
            return None
        return LockManager(
            provider,
            clock=self.runner.clock,
            owner=rc.ref.run_id,
            actor=rc.ref.actor,
            lease=lease,
            timeout=timeout,
        )

    def _check_run_lock(self, name: str | None, token: int | None, run_id: str) -> None:
        """The fencing token that travelled with the activity must still be the live one."""
        provider = self.runner.lock_provider
        if not name or provider is None or token is None:
            return
        lease = provider.holder(name)
        if lease is None or lease.owner != run_id or lease.token != token:
            raise LeaseLost(f"run lock {name!r} (token {token}) is no longer held by this run")

    # -- attempt ----------------------------------------------------------------------------

    @activity.defn(name="runbook.attempt")
    async def attempt(self, job: M.Attempt) -> M.Outcome:
        try:
            return await _heartbeating(self._attempt(job))
        except ApplicationError:
            raise
        except (Refused, AuditError, Exception) as exc:
            raise _fatal(exc) from None

    async def _attempt(self, job: M.Attempt) -> M.Outcome:
        clock = BankedClock(job.waited)
        rc, prepared = await asyncio.to_thread(self._begin, job, clock)
        try:
            if isinstance(prepared, M.Outcome):
                return prepared
            res, kwargs = prepared
            return await self._run(rc, job, res, kwargs, clock)
        finally:
            if not rc.closed:
                for error in await asyncio.to_thread(rc.close):
                    activity.logger.warning(rc.redactor.text(error))

    def _begin(
        self, job: M.Attempt, clock: Any
    ) -> tuple[RunContext, M.Outcome | tuple[StepResult, dict[str, Any]]]:
        rc = self.runs.context(job.run, outputs=job.inputs, clock=clock)
        try:
            return rc, self._prepare(rc, job, clock)
        except BaseException:
            rc.close()
            raise

    def _prepare(
        self, rc: RunContext, job: M.Attempt, clock: Any
    ) -> M.Outcome | tuple[StepResult, dict[str, Any]]:
        """``when``, the arguments, the run lock's token; then the running row and event."""
        step = rc.runbook.steps[job.step]
        CURRENT_STEP.set(step.name)
        res = StepResult(step.name, kind=step.kind, attempts=job.attempt)
        res.started_at = datetime.fromisoformat(job.started_at) if job.started_at else None
        skip = self._when(rc, step, job.inputs) if job.check_when else None
        kwargs = self._kwargs(rc, step.args, job.inputs) if skip is None else skip
        if isinstance(kwargs, str):
            res.status, res.reason = R.SKIPPED, kwargs
            rc.recorder.step_finished(res, "step_skipped", {"reason": kwargs})
            return M.Outcome(R.SKIPPED, reason=kwargs)
        self._check_run_lock(job.run_lock, job.token, job.run.run_id)
        res.status = R.STEP_RUNNING
        res.started_at = res.started_at or clock.now()
        rc.recorder.step_started(res, job.attempt)
        return res, kwargs

    async def _run(
        self,
        rc: RunContext,
        job: M.Attempt,
        res: StepResult,
        kwargs: dict[str, Any],
        clock: Any,
    ) -> M.Outcome:
        step = rc.runbook.steps[job.step]
        CURRENT_STEP.set(step.name)
        lock_name, locks, token = None, None, job.token
        if step.options.lock and self.runner.lock_provider is not None:
            lock_name = expand_name(step.options.lock, env=job.run.env, params=rc.params)
            locks = self._locks(rc, self.runner.lease, self.runner.lock_timeout)
            assert locks is not None
            try:
                (lease,) = await locks.acquire([lock_name])
            except LockHeld as held:
                await asyncio.to_thread(rc.recorder.lock_denied, held, step.name)
                return await asyncio.to_thread(self._complete, rc, job, res, None, held, 0.0)
            await asyncio.to_thread(rc.recorder.locks_acquired, [lease], step.name)
            token = lease.token
        if token is not None:
            FENCING_TOKEN.set(token)
        began = clock.monotonic()
        try:
            output, exc = await self._traced(rc, job, step, kwargs, token)
        finally:
            if locks is not None and lock_name is not None:
                released = await locks.release([lock_name])
                await locks.aclose()
                await asyncio.to_thread(rc.recorder.locks_released, released, step.name, stop=True)
        duration = clock.monotonic() - began
        return await asyncio.to_thread(self._complete, rc, job, res, output, exc, duration, True)

    async def _traced(
        self, rc: RunContext, job: M.Attempt, step: StepDef, kwargs: dict[str, Any], token: Any
    ) -> tuple[Any, BaseException | None]:
        """The call inside its ``runbook.step`` span, a child of the run span whose context
        came with the activity (``Attempt.trace``): whichever worker runs it, the attempt is in
        the run's trace, and the commands and requests it makes carry it on."""
        ref = job.run
        with (
            tracing.attached(job.trace),
            tracing.attempt_span(ref.run_id, step.name, ref.env, job.attempt) as span,
        ):
            output, exc = await self._call(step, kwargs, self.executor, job, token)
            if exc is None:
                span.set_status("succeeded")
            else:
                span.set_status("failed", rc.redactor.text(error_text(exc)))
            return output, exc

    def _complete(
        self,
        rc: RunContext,
        job: M.Attempt,
        res: StepResult,
        output: Any,
        exc: BaseException | None,
        duration: float,
        close: bool = False,
    ) -> M.Outcome:
        """The attempt's outcome, stored and audited before the workflow hears of it."""
        try:
            return self._outcome(rc, job, res, output, exc, duration)
        finally:
            if close:
                for error in rc.close():
                    activity.logger.warning(rc.redactor.text(error))

    def _outcome(
        self,
        rc: RunContext,
        job: M.Attempt,
        res: StepResult,
        output: Any,
        exc: BaseException | None,
        duration: float,
    ) -> M.Outcome:
        clock = rc.scope.get("clock")
        started = _iso(res.started_at)
        duration_ms = round(duration * 1000, 3)
        if exc is None:
            res.status, res.output = R.STEP_SUCCEEDED, output
            self._finished(res, clock)
            rc.seqs[res.name] = job.seq
            rc.recorder.step_finished(
                res,
                "step_succeeded",
                {"output": output, "attempt": job.attempt, "duration_ms": duration_ms},
            )
            masked = stored_output(output, rc.redactor or None)  # never a secret in the history
            return M.Outcome(R.STEP_SUCCEEDED, output=masked, started_at=started, duration=duration)
        text = rc.redactor.text(error_text(exc))
        lost = isinstance(exc, LeaseLost)
        if job.attempt < job.attempts and not lost and not isinstance(exc, LockHeld):
            rc.recorder.emit(
                "step_retried",
                res.name,
                {"attempt": job.attempt, "error": text, "delay": round(job.retry_delay, 3)},
            )
            return M.Outcome("retry", error=text, started_at=started, duration=duration)
        res.status, res.error = R.STEP_FAILED, text
        self._finished(res, clock)
        data: dict[str, Any] = {"error": text, "attempt": job.attempt, "duration_ms": duration_ms}
        if not isinstance(exc, LockHeld):
            data["traceback"] = rc.redactor.text("".join(traceback.format_exception(exc))[-4000:])
        rc.seqs[res.name] = job.seq
        rc.recorder.step_finished(res, "step_failed", data)
        return M.Outcome(
            R.STEP_FAILED,
            error=text,
            started_at=started,
            lease_lost=lost,
            lock_held=isinstance(exc, LockHeld),
            duration=duration,
        )

    @staticmethod
    def _finished(res: StepResult, clock: Any) -> None:
        finished = res.finished_at = clock.now()
        if res.started_at is not None:
            res.duration = (finished - res.started_at).total_seconds()

    def _when(self, rc: RunContext, step: StepDef, inputs: dict[str, Any]) -> str | None:
        """The reason to skip, or None to run."""
        if step.when_args is None or step.options.when is None:
            return None
        kwargs = self._kwargs(rc, step.when_args, inputs)
        if isinstance(kwargs, str):
            return kwargs
        return None if when_verdict(step.name, step.options.when(**kwargs)) else "when"

    async def _call(
        self,
        step: StepDef,
        kwargs: dict[str, Any],
        executor: LocalExecutor,
        job: M.Attempt | None,
        token: int | None,
        *,
        rollback: bool = False,
    ) -> tuple[Any, BaseException | None]:
        """One call through runbook's local executor (threads, timeouts, cancellation)."""
        func = step.rollback.func if rollback and step.rollback else step.func
        is_async = step.rollback.is_async if rollback and step.rollback else step.is_async
        attempt = Attempt(
            run_id=job.run.run_id if job else "",
            step=step.name,
            func=func,
            kwargs=kwargs,
            is_async=is_async,
            timeout=step.options.timeout,
            attempt=job.attempt if job else 1,
            fencing_token=token,
            rollback=rollback,
        )
        try:
            output = await executor.run(attempt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return None, exc
        if not rollback and type(output) not in _PLAIN:
            try:
                json.dumps(output)
            except (TypeError, ValueError):
                return None, TypeError(
                    f"step {step.name!r} returned a {type(output).__name__}, which is not "
                    "JSON-serialisable: return dicts, lists, strings, numbers, booleans or None "
                    "so the run can be stored and resumed"
                )
        return output, None

    # -- undo -------------------------------------------------------------------------------

    @activity.defn(name="runbook.undo")
    async def undo(self, job: M.Undo) -> M.Outcome:
        try:
            return await _heartbeating(self._undo(job))
        except ApplicationError:
            raise
        except Exception as exc:
            raise _fatal(exc) from None

    async def _undo(self, job: M.Undo) -> M.Outcome:
        rc = await asyncio.to_thread(self.runs.context, job.run, outputs=job.inputs)
        try:
            step = rc.runbook.steps[job.step]
            rb = step.rollback
            assert rb is not None
            CURRENT_STEP.set(step.name)
            prior = (
                self._store().get_steps(job.run.run_id).get(step.name) if self._store() else None
            )
            res = StepResult(step.name, kind=step.kind, status=R.STEP_SUCCEEDED)
            if prior is not None:
                res.status, res.output, res.attempts = prior.status, prior.output, prior.attempts
                res.started_at, res.finished_at = prior.started_at, prior.finished_at
                res.duration, res.reason, res.error = prior.duration, prior.reason, prior.error
                if prior.completed_seq is not None:
                    rc.seqs[step.name] = prior.completed_seq
            res.rollback = R.ROLLBACK_RUNNING
            await asyncio.to_thread(rc.recorder.rollback_started, res)
            kwargs: dict[str, Any] = {}
            for arg in rb.args:
                if arg.source == "extra":
                    kwargs[arg.name] = _unmasked(job.output)
                elif arg.source == "step":
                    default = arg.default if arg.has_default else None
                    kwargs[arg.name] = _unmasked(job.inputs.get(arg.key, default))
                elif arg.source == "name":
                    kwargs[arg.name] = rc.scope.get(arg.key)
                else:
                    kwargs[arg.name] = arg.default
            if job.token is not None:
                FENCING_TOKEN.set(job.token)
            with tracing.attached(job.trace):  # its commands and requests join the run's trace
                _, exc = await self._call(
                    step, kwargs, self.executor, None, job.token, rollback=True
                )
            res.rollback = R.STEP_ROLLED_BACK if exc is None else R.STEP_ROLLBACK_FAILED
            if exc is not None:
                res.rollback_error = rc.redactor.text(error_text(exc))
            if res.status == R.STEP_SUCCEEDED:  # a failed step keeps "failed" (DESIGN 10)
                res.status = res.rollback
            await asyncio.to_thread(rc.recorder.rollback_finished, res)
            return M.Outcome(res.rollback, error=res.rollback_error)
        finally:
            await asyncio.to_thread(rc.close)
