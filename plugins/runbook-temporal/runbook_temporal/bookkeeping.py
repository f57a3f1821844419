"""The run's bookkeeping activities, on the default task queue: what the workflow decides on.

``open_run`` collects the runbook in a worker and takes the run lock; ``gate`` asks the run's
``ApprovalPolicy`` (against the store, as a local run does) whether a gate may open; ``decide``
records a human decision; ``record`` makes the writes the workflow decides on (step rows it
settles itself, the run's status, its end and the release of its lock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import result as R
from runbook.approval_policy import ApprovalPolicy, gate_state, save_gate
from runbook.approvals import granted_by
from runbook.errors import AuditError, LockHeld
from runbook.expiry import record_expiry
from runbook.locks.base import expand_name
from runbook.result import StepResult
from runbook.store.base import InterruptDecision, StepRecord
from runbook_temporal import messages as M
from runbook_temporal.activities import PAUSED_LEASE, Activities, _fatal, _heartbeating, _unmasked
from runbook_temporal.runtime import Refused, RunContext
from runbook_temporal.spec import plan_of


class RunActivities(Activities):
    """The bookkeeping activities of one worker process."""

    def all(self) -> list[Callable[..., Any]]:
        return [self.open_run, self.record, self.decide, self.gate, self.expire]

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
                    base: dict[str, Any] = (
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
                    if state.status in (R.SKIPPED, R.DENIED, R.STEP_CANCELLED, R.STEP_FAILED):
                        base.setdefault("finished_at", now)
                    store.save_step(StepRecord(**base))
            for event in job.events:
                rc.recorder.emit(event.kind, event.step, event.data, actor=event.actor)
            provider = self.runner.lock_provider
            for name in job.release:
                lease = provider.holder(name) if provider is not None else None
                if provider is not None and lease is not None and lease.owner == job.run.run_id:
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
        """Record a choice for an interrupted step (retry/skip) and its audit event durably."""
        try:
            await _heartbeating(asyncio.to_thread(self._decide, job))
        except Exception as exc:
            raise _fatal(exc) from None

    def _decide(self, job: M.Record) -> None:
        store = self._store()
        now = self.runner.clock.now()
        for event in job.events:
            choice = event.data.get("decision")
            if (
                store is not None
                and event.kind == "step_interrupted"
                and choice in ("retry", "skip")
            ):
                store.add_interrupt_decision(
                    InterruptDecision(
                        job.run.run_id, event.step or "", choice, event.actor or "", now
                    )
                )
        self._record(job)

    # -- gates ------------------------------------------------------------------------------

    @activity.defn(name="runbook.gate")
    async def gate(self, job: M.GateCheck) -> M.GateVerdict:
        """Judge a gate with the run's ``ApprovalPolicy`` against the store, as a local run does."""
        try:
            return await _heartbeating(asyncio.to_thread(self._gate, job))
        except Exception as exc:
            raise _fatal(exc) from None

    def _gate(self, job: M.GateCheck) -> M.GateVerdict:
        rc = self.runs.context(job.run, outputs=job.outputs)
        try:
            step = rc.runbook.steps[job.step]
            approval = step.options.approval
            assert approval is not None
            policy = policy_for(self.runner, rc, job.policy)
            verdict = policy.check(job.step, approval, _Execution(rc, job.outputs))
            granted = sorted(granted_by(self._store().approvals(job.run.run_id, job.step)))
            if verdict == "pending" and not job.requested:
                res = StepResult(step.name, kind=step.kind, status=R.AWAITING_APPROVAL)
                res.reason = "awaiting approval"
                data = policy.request_data(job.step, approval)
                rc.recorder.step_finished(res, "approval_requested", data)
                self._store().update_run(job.run.run_id, status=R.PAUSED)
            deadline = None
            if verdict == "pending":
                state = gate_state(self._store().get_run(job.run.run_id).options, job.step)
                deadline = (state or {}).get("deadline")
            return M.GateVerdict(verdict, granted, deadline)
        finally:
            rc.close()

    @activity.defn(name="runbook.expire")
    async def expire(self, job: M.GateCheck) -> M.Expiry:
        """The workflow's timer for ``Approval(timeout=...)`` fired: record the expiry exactly
        as ``runbook sweep`` does for a local run (runbook.expiry)."""
        try:
            return await _heartbeating(asyncio.to_thread(self._expire, job))
        except Exception as exc:
            raise _fatal(exc) from None

    def _expire(self, job: M.GateCheck) -> M.Expiry:
        store = self._store()
        now = self.runner.clock.now()
        run_id = job.run.run_id
        step = store.get_steps(run_id).get(job.step)
        state = gate_state(store.get_run(run_id).options, job.step)
        if step is None or step.status != R.AWAITING_APPROVAL or not (state or {}).get("deadline"):
            return M.Expiry("none")
        assert state is not None
        if datetime.fromisoformat(state["deadline"]) > now:  # the gate was asked again since
            return M.Expiry("none")
        if state.get("expired"):  # recorded already, by an attempt whose worker then died
            return M.Expiry(state["expired"]["action"], state["expired"]["reason"])
        rc = self.runs.context(job.run)
        try:
            action, reason = record_expiry(store, rc.recorder, run_id, job.step, state, now)
        finally:
            rc.close()
        save_gate(
            store, run_id, job.step, {**state, "expired": {"action": action, "reason": reason}}
        )
        return M.Expiry(action, reason)


class _Execution:
    """What ``ApprovalPolicy.check`` uses of a run: its clock, outputs, and audit."""

    def __init__(self, rc: RunContext, outputs: dict[str, Any]) -> None:
        self.clock = rc.scope.get("clock")
        self.outputs = {k: _unmasked(v) for k, v in outputs.items()}
        self._recorder = rc.recorder

    def emit(self, kind: str, step: str | None = None, data: dict[str, Any] | None = None) -> None:
        self._recorder.emit(kind, step, data)


def policy_for(runner: Any, rc: RunContext, policy: M.Policy) -> ApprovalPolicy:
    """The run's approval policy, built as a local run builds it: the rules of the run's env
    (protection, approvers, groups, signers), its plan (runbook, params, masked outputs)."""
    env = runner.envs.rules(rc.ref.env)
    return ApprovalPolicy(
        rc.ref.run_id,
        rc.ref.actor,
        env.protection,
        runner.store,
        env.approvers,
        policy.yes,
        groups=env.groups,
        signers=env.signers,
        runbook=rc.runbook,
        env=rc.ref.env,
        params=rc.params,
        mask=rc.redactor,
    )
