"""One step of a run, from its inputs to its outcome: the per-step path of the driver.

``run_step`` is the task the scheduler (``runbook.scheduling``) starts for a ready step: it
injects the step's inputs (or skips it when one was skipped), evaluates ``when=``, plans it under
``--dry-run``, stops at its approval gate (``runbook.gates``), takes its lock, then runs its
attempts. Each attempt's start is durable before its side effects (``RunRecorder.step_started``,
or a batch of starts launched together: ``runbook.grouping``); the executor
(``runbook.executors``) runs it inside its ``runbook.step`` span; whether to retry and how long
to wait is the coordinator's decision, and the wait is the run's clock's. A lease lost at any
moment of an attempt voids its outcome (``LeaseLost``), and the outcome is durable before the
step's lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from runbook import result as R
from runbook import tracing
from runbook.context import CURRENT_STEP, FENCING_TOKEN
from runbook.errors import AuditError, LeaseLost, LockHeld, StoreError
from runbook.executors import Attempt
from runbook.failure import LOG
from runbook.failure import describe as describe_failure
from runbook.gates import through_gate
from runbook.recorder import error_text
from runbook.scheduling import uncancel
from runbook.values import output_problem, when_verdict

if TYPE_CHECKING:
    from runbook.collect import Arg, StepDef
    from runbook.engine import Execution

# The reason stored for a step whose start was refused (by a required sink or the store): it
# never called its code, so it ends ``cancelled`` with this reason, never ``running``.
NOT_STARTED = "not started: its start could not be recorded"


def step_kwargs(x: Execution, args: tuple[Arg, ...]) -> dict[str, Any] | str:
    """Arguments for a call, or the reason the step must be skipped."""
    blocked = x.coord.blocked_by(args)
    if blocked is not None:
        return blocked
    out = {}
    results, outputs, scope = x.results, x.outputs, x.s.scope
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


async def run_step(x: Execution, name: str) -> None:
    """The task of one step: inputs, ``when=``, gate and lock, then its attempts."""
    step, coord, dry = x.steps[name], x.coord, x.s.dry_run
    CURRENT_STEP.set(name)
    kwargs = step_kwargs(x, step.args)
    # --dry-run: inputs that are only "planned" still let a probe-only when= be evaluated.
    planned = dry and isinstance(kwargs, str) and kwargs.endswith(R.PLANNED)
    if isinstance(kwargs, str) and not planned:
        return x.skip(name, kwargs)
    when = step.options.when  # when_args are the arguments of when=: both or neither
    if when is not None and step.when_args is not None:
        if dry and any(
            a.source == "step" and x.steps[a.key].kind != "probe" for a in step.when_args
        ):
            coord.on_planned(name, "when: decided at run time")
            return x.finish(name)
        when_kwargs = step_kwargs(x, step.when_args)
        if isinstance(when_kwargs, str):
            return x.skip(name, when_kwargs)
        try:
            decision = when_verdict(name, when(**when_kwargs))
        except (Exception, SystemExit) as exc:
            text = error_text(exc)
            return x.fail(name, f"when= raised {text}", {"error": text})
        if not decision:
            return x.skip(name, "when")
    if planned or (dry and step.kind != "probe"):
        coord.on_planned(name, f"would run{' (approval gate)' if step.options.approval else ''}")
        return x.finish(name)
    assert isinstance(kwargs, dict)
    approval = step.options.approval
    if approval is not None and not dry and not through_gate(x, name, approval, kwargs):
        return
    lock_name = x.template(step.options.lock) if step.options.lock else None
    locks = x.s.locks
    if lock_name and locks:
        try:
            await x.acquire([lock_name], name)
        except LockHeld as exc:
            x.lock_denied = str(exc)
            return x.fail(name, str(exc), {"error": str(exc)})
    token = x.token(lock_name)
    if token is not None:
        FENCING_TOKEN.set(token)
    try:
        await _attempts(x, step, kwargs, token, lock_name)
    finally:
        if lock_name and locks:
            with contextlib.suppress(AuditError, StoreError):  # reported through fail_run
                x.rec.flush()  # the outcome is durable before the lock is free
            x.rec.locks_released(await locks.release([lock_name]), name, stop=True)


async def _attempts(
    x: Execution, step: StepDef, kwargs: dict[str, Any], token: int | None, lock_name: str | None
) -> None:
    name, res, coord, clock = step.name, x.results[step.name], x.coord, x.clock
    locks, guarded = x.s.locks, (lock_name, x.run_lock)
    LOG.set(res.log)  # what the step logs through ``log`` is kept with its outcome
    # An attempt's number goes on from the attempts a resumed run recorded (an interrupted
    # attempt was attempt 1: the retry is attempt 2 in the trail and the store); the retry
    # budget counts this process's attempts: ``--retry-interrupted`` is a new try, and it gets
    # the step's ``retries`` as a first run does.
    before, tries = res.attempts, 0
    while True:
        tries += 1
        attempt = before + tries
        coord.on_started(name, attempt)
        res.started_at = res.started_at or clock.now()
        exc: BaseException | None = None
        output: Any = None  # read only when the attempt returned (exc is None)
        started, began = False, 0.0
        try:
            # Durable before the side effects start; with the others launched with it.
            if x.group and (len(x.tasks.running) > 1 or x.starts.shared):
                await x.starts.join(x.rec, res, attempt)
            else:
                x.rec.step_started(res, attempt)
            started, began = True, clock.monotonic()
            output = await _traced(
                x,
                Attempt(
                    x.s.info.run_id,
                    name,
                    step.func,
                    kwargs,
                    step.is_async,
                    step.options.timeout,
                    attempt,
                    token,
                ),
            )
        except asyncio.CancelledError:
            lost = x.lost.pop(name, None)
            if lost is None:
                coord.on_cancelled(name)
                x.finish(name, event="step_failed", data={"error": "cancelled"})
                raise
            uncancel()
            exc = lost
            began = began or clock.monotonic()  # lost while its start was being written
        except Exception as error:
            if not started:  # its start was not recorded: nothing ran, the run stops
                res.status, res.reason = R.STEP_CANCELLED, NOT_STARTED
                x.not_started.append(name)
                raise
            exc = error
        if locks is not None and (gone := locks.check(guarded)) is not None:
            exc = gone  # the lease ran out at some moment of the step: its outcome is void
        if exc is None:
            exc = output_problem(name, output)
        if exc is None:
            res.output = output
            x.outputs[name] = output
            coord.on_succeeded(name)
            duration_ms = round((clock.monotonic() - began) * 1000, 3)
            data = {"output": output, "attempt": attempt, "duration_ms": duration_ms}
            if res.log:
                data["log"] = list(res.log)
            return x.finish(name, event="step_succeeded", data=data)
        text = error_text(exc)
        if coord.should_retry(name, tries, lease_lost=isinstance(exc, LeaseLost)):
            delay = coord.backoff(name, tries, x.s.rng.random())
            data = {"attempt": attempt, "error": text, "delay": round(delay, 3)}
            x.emit("step_retried", name, data)
            await clock.asleep(delay)
            continue
        why = describe_failure(exc, x.rb.path, x.s.redactor.text)
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
        return x.fail(name, text, data)


async def _traced(x: Execution, attempt: Attempt) -> Any:
    """One attempt inside its ``runbook.step`` span, a child of the run's: commands and
    requests the step makes carry this span's trace context (runbook.tracing)."""
    if not tracing.enabled():  # no OpenTelemetry API installed: no span to open
        return await x.executor.run(attempt)
    info = x.s.info
    with tracing.attempt_span(info.run_id, attempt.step, info.env, attempt.attempt) as span:
        try:
            output = await x.executor.run(attempt)
        except BaseException as exc:
            span.set_status("failed", error_text(exc))
            raise
        span.set_status("succeeded")
        return output
