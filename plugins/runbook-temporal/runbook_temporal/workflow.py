"""The run as a Temporal workflow, driving runbook's own ``Coordinator``.

The workflow decides nothing itself: the coordinator (pure, deterministic, the same code that
decides a local run) says what is ready, whether a failure is retried and how long the backoff
is, and the rollback order; the workflow turns each decision into an activity on the step's task
queue, a durable timer (backoffs, bakes), or a wait for a human (an approval gate, an interrupted
step), and feeds the outcome back. Replaying the history replays the same decisions.

Crash semantics are runbook's (DESIGN 3): an attempt whose worker stops heartbeating was
interrupted. An ``idempotent=True`` step is run again (by whichever worker takes it); any other
step pauses the run until a human decides (``runbook resume RUN --retry-interrupted`` or
``--skip-interrupted``), because it may have half-happened.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as NoHeartbeat

with workflow.unsafe.imports_passed_through():
    from runbook import result as R
    from runbook.approvals import waiting_gate
    from runbook.coordinator import Coordinator
    from runbook.errors import ApprovalError
    from runbook_temporal import messages as M
    from runbook_temporal.dag import shadow


def _message(exc: BaseException) -> str:
    """What went wrong, from an activity's failure: its own message, not Temporal's wrapper."""
    while isinstance(exc, ActivityError) and exc.cause is not None:
        exc = exc.cause
    return exc.message if isinstance(exc, ApplicationError) else str(exc)


ONCE = RetryPolicy(maximum_attempts=1)  # retrying is runbook's decision, never Temporal's
LONG = timedelta(days=30)  # no step attempt is cut off by Temporal; heartbeats tell a dead worker
SHORT = timedelta(minutes=5)


@workflow.defn(name=M.WORKFLOW)
class RunWorkflow:
    def __init__(self) -> None:
        self.inp: M.RunInput | None = None
        self.c: Coordinator | None = None
        self.specs: dict[str, M.StepSpec] = {}
        self.granted: dict[str, list[str]] = {}  # gate -> who approved it so far
        self.pokes: dict[str, int] = {}  # gate -> decisions received (re-check it)
        self.deciding: set[str] = set()  # gates with a decision not yet weighed: not waiting
        self.outputs: dict[str, Any] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.interrupted: dict[str, str | None] = {}  # step -> decision once taken
        self.error: str | None = None
        self.lock_denied: str | None = None
        self.plan = M.Plan(steps=[])
        self.finished = False
        self.cancelled_by: str | None = None

    # -- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: M.RunInput) -> M.Progress:
        self.inp = inp
        try:
            self.plan = await workflow.execute_activity(
                "runbook.open_run",
                inp.run,
                result_type=M.Plan,
                task_queue=inp.queue,
                start_to_close_timeout=SHORT,
                heartbeat_timeout=timedelta(seconds=inp.heartbeat),
                retry_policy=ONCE,
            )
        except ActivityError as exc:
            cause = exc.cause
            text = cause.message if isinstance(cause, ApplicationError) else str(exc)
            if isinstance(cause, ApplicationError) and cause.type == "LockHeld":
                self.lock_denied = text
            self.error = text
            await self._record(
                [M.Event("run_finished", None, {"status": R.FAILED, "error": text})],
                status=R.FAILED,
            )
            self.finished = True
            return self.progress()
        self.specs = {s.name: s for s in self.plan.steps}
        self.c = Coordinator(shadow(self.plan))  # type: ignore[arg-type]
        self.c.start()
        await self._schedule()
        if self.c.stopping:
            await self._rollback()
        return await self._finish()

    async def _schedule(self) -> None:
        c, inp = self.c, self.inp
        assert c is not None and inp is not None
        while True:
            for name in c.take_ready(max(0, inp.max_parallel - len(self.tasks))):
                self.tasks[name] = asyncio.create_task(self._step(name))
            if not self.tasks:
                return
            await workflow.wait(list(self.tasks.values()), return_when=asyncio.FIRST_COMPLETED)
            for name, task in list(self.tasks.items()):
                if task.done():
                    del self.tasks[name]
                    if not task.cancelled() and (exc := task.exception()) is not None:
                        self._fatal(_message(exc))
            if c.stopping:
                for task in self.tasks.values():
                    task.cancel()

    def _fatal(self, text: str) -> None:
        assert self.c is not None
        self.error = self.error or text
        self.c.fail_run()

    # -- one step ---------------------------------------------------------------------------

    async def _step(self, name: str) -> None:
        c, spec = self.c, self.specs[name]
        assert c is not None
        step = c.steps[name]
        reason = c.blocked_by(step.args)
        if reason is not None:
            await self._skip(name, reason)
            return
        if spec.approval is not None and not await self._gate(name, spec):
            return
        if spec.wait > 0:  # a bake: a durable timer, then the step with its wait served
            await workflow.sleep(spec.wait)
        attempt = 1
        started_at: str | None = None
        while True:
            c.on_started(name, attempt)
            delay = c.backoff(name, attempt, workflow.random().random())
            job = M.Attempt(
                run=self._ref(),
                step=name,
                attempt=attempt,
                attempts=spec.retries + 1,
                inputs={k: self.outputs[k] for k in spec.deps if k in self.outputs},
                run_lock=self.plan.run_lock,
                token=self.plan.run_token,
                retry_delay=delay,
                seq=c.seq + 1,
                started_at=started_at,
                waited=spec.wait,
                check_when=attempt == 1,
                trace=self._trace(),
            )
            try:
                out = await self._activity("runbook.attempt", job, spec.queue, M.Outcome)
            except asyncio.CancelledError:
                c.on_cancelled(name)
                await self._record(
                    [M.Event("step_failed", name, {"error": "cancelled"})],
                    steps=[M.StepState(name, R.STEP_CANCELLED, "cancelled", attempts=attempt)],
                )
                raise
            except ActivityError as exc:
                if isinstance(exc.cause, CancelledError):
                    # The run's cancellation reached the attempt (its worker waited for the
                    # step's code to stop): the step was cut off, as a local cancel cuts it.
                    c.on_cancelled(name)
                    await self._record(
                        [M.Event("step_failed", name, {"error": "cancelled"})],
                        steps=[M.StepState(name, R.STEP_CANCELLED, "cancelled", attempts=attempt)],
                    )
                    return
                if not self._interrupted(exc):
                    raise
                if await self._after_interruption(name, spec):
                    continue  # the same attempt again, on whichever worker takes it
                return
            started_at = out.started_at or started_at
            res = c.results[name]
            res.duration = out.duration
            if out.status == R.STEP_SUCCEEDED:
                res.output = out.output
                self.outputs[name] = out.output
                c.on_succeeded(name)
                return
            if out.status == R.SKIPPED:
                c.on_skipped(name, out.reason or "when")
                return
            if out.status == "retry" and c.should_retry(name, attempt):
                await workflow.sleep(delay)  # the backoff, as a durable timer
                attempt += 1
                continue
            res.error = out.error
            if out.lock_held:
                self.lock_denied = out.error
            c.on_failed(name)
            return

    @staticmethod
    def _interrupted(exc: ActivityError) -> bool:
        """The worker stopped heartbeating (died, lost its host): not a failure of the step."""
        return isinstance(exc.cause, NoHeartbeat)

    async def _after_interruption(self, name: str, spec: M.StepSpec) -> bool:
        """True to run the step again; False once it was skipped by a human."""
        if spec.idempotent:
            await self._record(
                [M.Event("step_interrupted", name, {"decision": "rerun", "idempotent": True})]
            )
            return True
        text = (
            f"step {name!r} was running when its worker died and is not idempotent; it may "
            f"have half-happened. Check, then: runbook resume {self._ref().run_id} "
            "--retry-interrupted (run it again) or --skip-interrupted (treat as not run)"
        )
        await self._record(
            [M.Event("run_paused", None, {"interrupted": [name], "reason": text})],
            status=R.PAUSED,
            error=text,
        )
        self.interrupted[name] = None  # a decision is taken from here on
        await workflow.wait_condition(lambda: self.interrupted.get(name) is not None)
        choice = self.interrupted.pop(name)
        if choice == "skip":
            assert self.c is not None
            self.c.on_skipped(name, "skipped after interruption")
            return False
        return True

    async def _skip(self, name: str, reason: str) -> None:
        assert self.c is not None
        self.c.on_skipped(name, reason)
        await self._record(
            [M.Event("step_skipped", name, {"reason": reason})],
            steps=[M.StepState(name, R.SKIPPED, reason)],
        )

    async def _gate(self, name: str, spec: M.StepSpec) -> bool:
        """Wait at the gate until the run's approval policy opens it; True when granted.

        The policy runs in a worker against the store (the ``runbook.gate`` activity); each
        decision received as an update makes the workflow ask it again.
        """
        c, inp = self.c, self.inp
        assert c is not None and inp is not None
        requested = False
        while True:
            pokes = self.pokes.get(name, 0)
            job = M.GateCheck(self._ref(), name, inp.policy, dict(self.outputs), requested)
            try:
                verdict = await self._activity("runbook.gate", job, None, M.GateVerdict)
            except ActivityError as exc:
                if not self._interrupted(exc):
                    raise
                continue  # bookkeeping only: ask again on another worker
            self.granted[name] = verdict.granted
            if verdict.verdict == "pending" and self.pokes.get(name, 0) == pokes:
                self.deciding.discard(name)
            if verdict.verdict == "granted":
                if requested:
                    await self._record([], status=R.RUNNING)
                return True
            if verdict.verdict == "denied":
                c.on_denied(name)
                await self._record([], steps=[M.StepState(name, R.DENIED, "approval denied")])
                return False
            if not requested:  # the activity recorded approval_requested and the pause
                c.on_awaiting(name)
                requested = True
            try:
                # Approval(timeout=...): a durable timer on the server, so the gate expires on
                # time with no worker and no process of the user alive; the expiry is recorded
                # as soon as a worker can take the activity.
                def poked(seen: int = pokes) -> bool:
                    return self.pokes.get(name, 0) != seen

                await workflow.wait_condition(poked, timeout=self._left(verdict.deadline))
            except TimeoutError:  # the gate's deadline (asyncio's, the builtin)
                if await self._expire(name):
                    return False
            except asyncio.CancelledError:  # the run ends (cancelled, or failed elsewhere)
                await self._record(
                    [], steps=[M.StepState(name, R.STEP_CANCELLED, "run ended at the gate")]
                )
                raise

    @staticmethod
    def _left(deadline: str | None) -> float | None:
        """Seconds until a gate's deadline (at least a tick: the timer must still be set)."""
        if deadline is None:
            return None
        left = (datetime.fromisoformat(deadline) - workflow.now()).total_seconds()
        return max(left, 0.001)

    async def _expire(self, name: str) -> bool:
        """The gate's deadline passed: recorded as ``approval_expired`` (actor ``runbook``) by a
        worker, as ``runbook sweep`` records it for a local run; ``deny`` denies the gate,
        ``fail`` fails the step, and the run settles (rollback of what completed). False when
        the gate was no longer waiting (nothing recorded): check it again."""
        c, inp = self.c, self.inp
        assert c is not None and inp is not None
        job = M.GateCheck(self._ref(), name, inp.policy, dict(self.outputs), True)
        expiry = await self._durable("runbook.expire", job, M.Expiry)
        if expiry.action == "fail":
            c.results[name].error = expiry.reason
            c.on_failed(name)
            await self._record(
                [M.Event("step_failed", name, {"error": expiry.reason})],
                steps=[M.StepState(name, R.STEP_FAILED, None, expiry.reason)],
            )
            return True
        if expiry.action == "deny":
            c.on_denied(name)
            await self._record([], steps=[M.StepState(name, R.DENIED, expiry.reason)])
            return True
        return False

    # -- rollback and the end ---------------------------------------------------------------

    async def _rollback(self) -> None:
        c = self.c
        assert c is not None
        while (name := c.next_rollback()) is not None:
            job = M.Undo(
                run=self._ref(),
                step=name,
                output=self.outputs.get(name),
                inputs=dict(self.outputs),
                token=self.plan.run_token,
                trace=self._trace(),
            )
            c.on_rollback_started(name)
            try:
                out = await self._activity("runbook.undo", job, self.specs[name].queue, M.Outcome)
            except ActivityError as exc:
                c.on_rollback_failed(name, f"rollback interrupted: {exc.cause or exc}")
                continue
            if out.status == R.STEP_ROLLED_BACK:
                c.on_rolled_back(name)
            else:
                c.on_rollback_failed(name, out.error or "rollback failed")

    async def _finish(self) -> M.Progress:
        c = self.c
        assert c is not None
        status = c.status()
        self.error = self.error or c.first_error()
        events = []
        if status == R.CANCELLED:
            events.append(M.Event("run_cancelled", None, {"cancelled_by": self.cancelled_by}))
        events.append(M.Event("run_finished", None, {"status": status, "error": self.error}))
        release = [self.plan.run_lock] if self.plan.run_lock else []
        await self._record(events, status=status, error=self.error, release=release)
        self.finished = True
        return self.progress()

    # -- decisions (Temporal updates) -------------------------------------------------------

    @workflow.update(name="decide")
    async def decide(self, d: M.Decision) -> dict[str, Any]:
        """A decision a human made (recorded in the store by runbook's ``Decisions``): an
        approval or a denial makes its gate(s) ask the run's approval policy again; a choice
        for an interrupted step, or a cancellation, is acted on here."""
        c = self.c
        assert c is not None
        run_id = self._ref().run_id
        if d.kind in ("approved", "denied"):
            gates = [self._gated(d.step)] if d.kind == "approved" else c.awaiting()
            for step in gates:
                self.pokes[step] = self.pokes.get(step, 0) + 1
                self.deciding.add(step)
            return {"run_id": run_id, "gates": gates}
        if d.kind in ("retry", "skip"):
            step = self._interrupted_step(d.step)
            data = {"decision": d.kind, "by": d.actor}
            await self._decide([M.Event("step_interrupted", step, data, d.actor)])
            if d.kind == "skip":
                await self._record(
                    [], steps=[M.StepState(step, R.SKIPPED, "skipped after interruption")]
                )
            await self._record([], status=R.RUNNING, error=None)
            self.interrupted[step] = d.kind
            return {"run_id": run_id, "step": step, "decision": d.kind}
        # cancel
        self.cancelled_by = d.actor
        c.cancel_run()
        for task in self.tasks.values():
            task.cancel()
        return {"run_id": run_id, "cancelled": True}

    @decide.validator
    def _validate(self, d: M.Decision) -> None:
        """Refuse a decision that does not apply to the run as it is, before it enters the
        history (whether it counts is the approval policy's, at the gate)."""
        try:
            if self.finished or self.c is None or self.inp is None:
                raise ApprovalError(f"run {self._ref().run_id} has ended")
            if d.kind == "approved":
                self._gated(d.step)
            elif d.kind == "denied":
                if not self.c.awaiting():
                    raise ApprovalError(f"run {self._ref().run_id} has no step awaiting approval")
            elif d.kind in ("retry", "skip"):
                self._interrupted_step(d.step)
            elif d.kind != "cancel":
                raise ApprovalError(f"unknown decision {d.kind!r}")
        except ApprovalError as exc:
            raise ApplicationError(str(exc), type="ApprovalError", non_retryable=True) from None

    def _gated(self, step: str | None) -> str:
        assert self.c is not None
        return waiting_gate(self._ref().run_id, self.c.awaiting(), step)

    def _interrupted_step(self, step: str | None) -> str:
        pending = [n for n, choice in self.interrupted.items() if choice is None]
        run_id = self._ref().run_id
        if step is not None and step in pending:
            return step
        if step is None and len(pending) == 1:
            return pending[0]
        if not pending:
            raise ApprovalError(f"run {run_id} has no interrupted step waiting for a decision")
        raise ApprovalError(f"interrupted steps: {', '.join(pending)}: name one with --step")

    # -- what followers see -----------------------------------------------------------------

    @workflow.query(name="progress")
    def progress(self) -> M.Progress:
        c = self.c
        if c is None:
            status = R.FAILED if self.finished else R.RUNNING
            return M.Progress(
                status=status,
                error=self.error,
                lock_denied=self.lock_denied,
                finished=self.finished,
            )
        steps = {
            n: M.StepState(
                n,
                r.status,
                r.reason,
                r.error or r.rollback_error,
                r.attempts,
                r.duration,
                r.rollback,
            )
            for n, r in c.results.items()
        }
        interrupted = [n for n, choice in self.interrupted.items() if choice is None]
        # A gate with a decision not yet weighed is not waiting: it is about to be re-checked.
        waiting = [n for n in c.awaiting() if n not in self.deciding]
        if self.finished:
            status = c.status()
        elif interrupted or (waiting and all(n in waiting for n in self.tasks)):
            status = R.PAUSED
        else:
            status = R.RUNNING
        return M.Progress(
            status=status,
            steps=steps,
            waiting=waiting,
            interrupted=interrupted,
            error=self.error,
            outputs=dict(self.outputs),
            lock_denied=self.lock_denied,
            finished=self.finished,
            stopping=c.stopping,
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _ref(self) -> M.RunRef:
        assert self.inp is not None
        return self.inp.run

    def _trace(self) -> dict[str, str]:
        assert self.inp is not None
        return self.inp.trace

    async def _activity(self, name: str, arg: Any, queue: str | None, result: type) -> Any:
        assert self.inp is not None
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result,
            task_queue=queue or self.inp.queue,
            start_to_close_timeout=LONG,
            heartbeat_timeout=timedelta(seconds=self.inp.heartbeat),
            retry_policy=ONCE,
            # A cancelled attempt is over only once the step's code has stopped: a rollback
            # must never race the half-done thing it undoes.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )

    async def _record(
        self,
        events: list[M.Event],
        *,
        steps: list[M.StepState] | None = None,
        status: str | None = None,
        error: str | None = None,
        release: list[str] | None = None,
    ) -> None:
        job = M.Record(self._ref(), events, steps or [], status, error, release or [])
        await self._durable("runbook.record", job)

    async def _decide(self, events: list[M.Event]) -> None:
        """Record a choice for an interrupted step in the store and the trail."""
        await self._durable("runbook.decide", M.Record(self._ref(), events))

    async def _durable(self, name: str, job: Any, result: type | None = None) -> Any:
        """Bookkeeping writes, retried only when their worker died (a refusal is final)."""
        assert self.inp is not None
        return await workflow.execute_activity(
            name,
            job,
            result_type=result,
            task_queue=self.inp.queue,
            start_to_close_timeout=SHORT,
            heartbeat_timeout=timedelta(seconds=self.inp.heartbeat),
            # Only a worker that died is retried: a refused write is final (non-retryable).
            retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10)),
        )


__all__ = ["CancelledError", "RunWorkflow"]
