"""The activities: everything of a run that touches the world, done in a worker.

``attempt`` runs one attempt of one step on the step's task queue and does that attempt's durable
writes (the store row before the side effects start and after they end, the audit events, the
step's lock); ``undo`` runs one rollback; ``open_run`` collects the runbook and takes the run
lock; ``record`` makes the writes the workflow decides on (run status, gates, the run's end).
An activity heartbeats while it works, so a worker that dies is noticed within the heartbeat
timeout; none is ever retried by Temporal: whether an interrupted step runs again is runbook's
decision (DESIGN 3), taken in the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import result as R
from runbook.clock import DEADLINE
from runbook.collect import Arg, StepDef
from runbook.context import CURRENT_STEP, FENCING_TOKEN
from runbook.errors import AuditError, LeaseLost, LockHeld, StepTimeout
from runbook.locks.base import expand_name
from runbook.locks.manager import LockManager
from runbook.store.base import ApprovalRecord, InterruptDecision, StepRecord
from runbook_temporal import messages as M
from runbook_temporal.runtime import BankedClock, Refused, RunContext, WorkerRuns
from runbook_temporal.spec import plan_of

T = TypeVar("T")
_NOTHING = object()
_PLAIN = frozenset({type(None), bool, int, float, str})
REDACTED_KEY = "__runbook_redacted__"
PAUSED_LEASE = 7 * 24 * 3600.0  # the run lock outlives any worker: the workflow releases it


def error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class Activities:
    """The activity implementations of one worker process."""

    def __init__(self, runs: WorkerRuns) -> None:
        self.runs = runs
        self.runner = runs.runner

    def all(self) -> list[Callable[..., Any]]:
        return [self.open_run, self.attempt, self.undo, self.record, self.decide]

    # -- helpers ----------------------------------------------------------------------------

    def _store(self) -> Any:
        return self.runner.store

    def _save(self, rc: RunContext, record: StepRecord) -> None:
        output = record.output
        if rc.redactor and output is not None:
            masked = rc.redactor(output)
            if masked != output:  # a secret is never stored (nor sent to Temporal)
                record = StepRecord(
                    **{**asdict(record), "output": {REDACTED_KEY: True, "value": masked}}
                )
        if self._store() is not None:
            self._store().save_step(record)

    def _value(self, rc: RunContext, arg: Arg, inputs: dict[str, Any], missing: set[str]) -> Any:
        if arg.source == "step":
            if arg.key in inputs:
                return inputs[arg.key]
            return arg.default if arg.has_default else _NOTHING
        if arg.source == "name":
            return rc.scope.get(arg.key)
        return arg.default

    def _kwargs(
        self, rc: RunContext, args: tuple[Arg, ...], inputs: dict[str, Any], missing: set[str]
    ) -> dict[str, Any] | str:
        out = {}
        for arg in args:
            value = self._value(rc, arg, inputs, missing)
            if value is _NOTHING:
                return f"{arg.key} skipped"
            out[arg.name] = value
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

    # -- open_run ---------------------------------------------------------------------------

    @activity.defn(name="runbook.open_run")
    async def open_run(self, ref: M.RunRef) -> M.Plan:
        """Collect the runbook in this worker, record the start, take the run lock."""
        try:
            return await _heartbeating(self._open_run(ref))
        except LockHeld:
            raise
        except (Refused, AuditError, Exception) as exc:
            if isinstance(exc, ApplicationError):
                raise
            raise _fatal(exc) from None

    async def _open_run(self, ref: M.RunRef) -> M.Plan:
        rc = await asyncio.to_thread(self.runs.context, ref)
        try:
            plan = plan_of(rc.runbook)
            rc.recorder.emit("run_started", None, {"executor": "temporal"})
            if rc.runbook.lock and self.runner.lock_provider is not None:
                name = expand_name(rc.runbook.lock, env=ref.env, params=rc.params)
                locks = self._locks(rc, PAUSED_LEASE, self.runner.lock_timeout)
                assert locks is not None
                try:
                    (lease,) = await locks.acquire([name])
                except LockHeld as exc:
                    rc.recorder.emit(
                        "lock_denied",
                        None,
                        {"lock": exc.name, "holder": exc.holder, "holder_actor": exc.actor},
                    )
                    raise ApplicationError(str(exc), type="LockHeld", non_retryable=True) from None
                finally:
                    await locks.aclose()
                rc.recorder.emit(
                    "lock_acquired", None, {"lock": name, "fencing_token": lease.token}
                )
                plan.run_lock, plan.run_token = name, lease.token
            return plan
        finally:
            rc.close()

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
        rc = await asyncio.to_thread(
            self.runs.context, job.run, outputs=job.inputs, clock=BankedClock(job.waited)
        )
        try:
            return await self._run_attempt(rc, job)
        finally:
            for error in await asyncio.to_thread(rc.close):
                activity.logger.warning(rc.redactor.text(error))

    async def _run_attempt(self, rc: RunContext, job: M.Attempt) -> M.Outcome:
        step = rc.runbook.steps[job.step]
        clock = rc.scope.get("clock")
        CURRENT_STEP.set(step.name)
        missing = set(job.missing)
        started = datetime.fromisoformat(job.started_at) if job.started_at else None

        def finish(status: str, **fields: Any) -> None:
            now = clock.now()
            begun = started or now
            self._save(
                rc,
                StepRecord(
                    run_id=job.run.run_id,
                    name=step.name,
                    status=status,
                    attempts=job.attempt,
                    started_at=begun if status != R.SKIPPED else None,
                    finished_at=now,
                    duration=(now - begun).total_seconds() if status != R.SKIPPED else None,
                    completed_seq=job.seq if status == R.STEP_SUCCEEDED else None,
                    **fields,
                ),
            )

        if job.check_when:
            skip = await asyncio.to_thread(self._when, rc, step, job.inputs, missing)
            if skip is not None:
                await asyncio.to_thread(finish, R.SKIPPED, reason=skip)
                rc.recorder.emit("step_skipped", step.name, {"reason": skip})
                return M.Outcome(R.SKIPPED, reason=skip)
        kwargs = await asyncio.to_thread(self._kwargs, rc, step.args, job.inputs, missing)
        if isinstance(kwargs, str):
            await asyncio.to_thread(finish, R.SKIPPED, reason=kwargs)
            rc.recorder.emit("step_skipped", step.name, {"reason": kwargs})
            return M.Outcome(R.SKIPPED, reason=kwargs)
        self._check_run_lock(job.run_lock, job.token, job.run.run_id)
        started = started or clock.now()
        await asyncio.to_thread(
            self._save,
            rc,
            StepRecord(
                run_id=job.run.run_id,
                name=step.name,
                status=R.STEP_RUNNING,
                attempts=job.attempt,
                started_at=started,
            ),
        )
        rc.recorder.emit(
            "step_started",
            step.name,
            {"attempt": job.attempt, "worker": activity.info().task_queue},
        )
        lock_name = None
        locks = None
        token = job.token
        if step.options.lock and self.runner.lock_provider is not None:
            lock_name = expand_name(step.options.lock, env=job.run.env, params=rc.params)
            locks = self._locks(rc, self.runner.lease, self.runner.lock_timeout)
            assert locks is not None
            try:
                (lease,) = await locks.acquire([lock_name])
            except LockHeld as exc:
                text = str(exc)
                await asyncio.to_thread(finish, R.STEP_FAILED, error=text)
                rc.recorder.emit("step_failed", step.name, {"error": text})
                return M.Outcome(R.STEP_FAILED, error=text, started_at=_iso(started))
            rc.recorder.emit(
                "lock_acquired", step.name, {"lock": lock_name, "fencing_token": lease.token}
            )
            token = lease.token
        if token is not None:
            FENCING_TOKEN.set(token)
        began = clock.monotonic()
        try:
            output, exc = await self._call(step, kwargs, clock)
        finally:
            if locks is not None:
                for lease in await locks.release([lock_name]):
                    rc.recorder.emit(
                        "lock_released",
                        step.name,
                        {"lock": lease.name, "fencing_token": lease.token},
                    )
                await locks.aclose()
        duration_ms = round((clock.monotonic() - began) * 1000, 3)
        if exc is None:
            await asyncio.to_thread(finish, R.STEP_SUCCEEDED, output=output)
            rc.recorder.emit(
                "step_succeeded",
                step.name,
                {"output": output, "attempt": job.attempt, "duration_ms": duration_ms},
            )
            masked = rc.redactor(output) if rc.redactor and output is not None else output
            if masked != output:
                masked = {REDACTED_KEY: True, "value": masked}
            return M.Outcome(
                R.STEP_SUCCEEDED,
                output=masked,
                started_at=_iso(started),
                duration=duration_ms / 1000,
            )
        text = rc.redactor.text(error_text(exc))
        lost = isinstance(exc, LeaseLost)
        if job.attempt < job.attempts and not lost:
            rc.recorder.emit(
                "step_retried",
                step.name,
                {"attempt": job.attempt, "error": text, "delay": round(job.retry_delay, 3)},
            )
            return M.Outcome("retry", error=text, started_at=_iso(started))
        tb = rc.redactor.text("".join(traceback.format_exception(exc))[-4000:])
        await asyncio.to_thread(finish, R.STEP_FAILED, error=text)
        rc.recorder.emit(
            "step_failed",
            step.name,
            {"error": text, "attempt": job.attempt, "traceback": tb, "duration_ms": duration_ms},
        )
        return M.Outcome(
            R.STEP_FAILED,
            error=text,
            started_at=_iso(started),
            lease_lost=lost,
            duration=duration_ms / 1000,
        )

    def _when(
        self, rc: RunContext, step: StepDef, inputs: dict[str, Any], missing: set[str]
    ) -> str | None:
        """The reason to skip, or None to run."""
        if step.when_args is None or step.options.when is None:
            return None
        kwargs = self._kwargs(rc, step.when_args, inputs, missing)
        if isinstance(kwargs, str):
            return kwargs
        return None if step.options.when(**kwargs) else "when"

    async def _call(
        self,
        step: StepDef,
        kwargs: dict[str, Any],
        clock: Any,
        func: Any = None,
        is_async: Any = None,
    ) -> tuple[Any, BaseException | None]:
        func = func or step.func
        is_async = step.is_async if is_async is None else is_async
        timeout = step.options.timeout
        if timeout:
            DEADLINE.set((clock.monotonic() + timeout, step.name, timeout))
        try:
            if is_async:
                call = func(**kwargs)
                output = await (asyncio.wait_for(call, timeout) if timeout else call)
            else:
                output = await self._in_thread(func, kwargs, timeout)
        except TimeoutError as exc:
            if (
                timeout
                and isinstance(exc.__cause__, asyncio.CancelledError)
                and not isinstance(exc, StepTimeout)
            ):
                return None, StepTimeout(f"step {step.name!r} timed out after {timeout:g}s")
            return None, exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return None, exc
        finally:
            if timeout:
                DEADLINE.set(None)
        if type(output) not in _PLAIN:
            try:
                json.dumps(output)
            except (TypeError, ValueError):
                return None, TypeError(
                    f"step {step.name!r} returned a {type(output).__name__}, which is not "
                    "JSON-serialisable: return dicts, lists, strings, numbers, booleans or None "
                    "so the run can be stored and resumed"
                )
        return output, None

    @staticmethod
    async def _in_thread(func: Any, kwargs: dict[str, Any], timeout: float | None) -> Any:
        """A sync step in a thread; cancelled, it is waited for (a thread cannot be stopped),
        so the workflow never rolls back while the step is still doing what it undoes."""
        call = functools.partial(contextvars.copy_context().run, func, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(None, call)
        try:
            shielded = asyncio.shield(future)
            return await (asyncio.wait_for(shielded, timeout) if timeout else shielded)
        except asyncio.CancelledError:
            if not future.done():
                with contextlib.suppress(BaseException):
                    await future
            raise

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
            if job.token is not None:
                FENCING_TOKEN.set(job.token)
            rc.recorder.emit("rollback_started", step.name, {})
            kwargs: dict[str, Any] = {}
            for arg in rb.args:
                if arg.source == "extra":
                    kwargs[arg.name] = job.output
                elif arg.source == "step":
                    kwargs[arg.name] = job.inputs.get(
                        arg.key, arg.default if arg.has_default else None
                    )
                elif arg.source == "name":
                    kwargs[arg.name] = rc.scope.get(arg.key)
                else:
                    kwargs[arg.name] = arg.default
            clock = rc.scope.get("clock")
            _, exc = await self._call(step, kwargs, clock, func=rb.func, is_async=rb.is_async)
            status = R.STEP_ROLLED_BACK if exc is None else R.STEP_ROLLBACK_FAILED
            text = rc.redactor.text(error_text(exc)) if exc is not None else None
            store = self._store()
            if store is not None:
                prior = store.get_steps(job.run.run_id).get(step.name)
                if prior is not None:
                    store.save_step(StepRecord(**{**asdict(prior), "status": status}))
            if exc is None:
                rc.recorder.emit("rollback_succeeded", step.name, {})
            else:
                rc.recorder.emit("rollback_failed", step.name, {"error": text})
            return M.Outcome(status, error=text)
        finally:
            rc.close()

    # -- record / decide --------------------------------------------------------------------

    @activity.defn(name="runbook.record")
    async def record(self, job: M.Record) -> None:
        try:
            await _heartbeating(asyncio.to_thread(self._record, job))
        except Exception as exc:
            raise _fatal(exc) from None

    def _record(self, job: M.Record) -> None:
        rc = self.runs.context(job.run)
        try:
            store = self._store()
            if store is not None:
                now = self.runner.clock.now()
                current = store.get_steps(job.run.run_id)
                for state in job.steps:
                    prior = current.get(state.name)
                    base = (
                        asdict(prior)
                        if prior is not None
                        else {"run_id": job.run.run_id, "name": state.name}
                    )
                    base.update(
                        status=state.status,
                        reason=state.reason,
                        attempts=state.attempts or base.get("attempts", 0),
                    )
                    if state.error is not None:
                        base["error"] = state.error
                    if state.status in (R.SKIPPED, R.DENIED, R.STEP_CANCELLED):
                        base.setdefault("finished_at", now)
                    store.save_step(StepRecord(**base))
            for event in job.events:
                rc.recorder.emit(event.kind, event.step, event.data, actor=event.actor)
            provider = self.runner.lock_provider
            for name in job.release:
                lease = provider.holder(name) if provider is not None else None
                if lease is not None and lease.owner == job.run.run_id:
                    provider.release(lease)
                    rc.recorder.emit(
                        "lock_released", None, {"lock": name, "fencing_token": lease.token}
                    )
            if store is not None and job.status is not None:
                store.update_run(job.run.run_id, status=job.status, error=job.error)
        finally:
            rc.close()

    @activity.defn(name="runbook.decide")
    async def decide(self, job: M.Record) -> None:
        """Record a human decision (approval, denial, interrupted-step choice) durably."""
        try:
            await asyncio.to_thread(self._decide, job)
        except Exception as exc:
            raise _fatal(exc) from None

    def _decide(self, job: M.Record) -> None:
        store = self._store()
        now = self.runner.clock.now()
        for event in job.events:
            data = event.data
            if store is None:
                continue
            if event.kind in ("approval_granted", "approval_denied"):
                store.add_approval(
                    ApprovalRecord(
                        job.run.run_id,
                        event.step or "",
                        event.actor or "",
                        "granted" if event.kind == "approval_granted" else "denied",
                        data.get("comment") or data.get("reason") or "",
                        now,
                        bool(data.get("auto")),
                    )
                )
            elif event.kind == "step_interrupted" and data.get("decision") in ("retry", "skip"):
                store.add_interrupt_decision(
                    InterruptDecision(
                        job.run.run_id, event.step or "", data["decision"], event.actor or "", now
                    )
                )
        self._record(job)
