"""The ``temporal://`` executor as runbook opens it: whole runs handed to Temporal.

``local://`` runs one step attempt at a time inside the process that drives the run. A Temporal
run is driven by its workflow instead, so this executor takes the run as a whole
(``runs_remotely``): ``Runner.arun`` hands it the run, and ``approve``, ``deny``, ``cancel`` and
``resume`` of a run whose record names this executor come here too. Following a run reports its
steps through the runner's lifecycle hooks, so ``exec``'s terminal report looks as usual.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from runbook import result as R
from runbook import tracing
from runbook.context import RunInfo
from runbook.errors import ApprovalError, UsageError
from runbook.recovery import undecided_message
from runbook.result import RunResult, StepResult
from runbook_temporal import messages as M
from runbook_temporal.client import TemporalRuns, to_result


class TemporalExecutor:
    """Runs whole runs on Temporal; never a single in-process attempt."""

    runs_remotely = True

    def __init__(self, url: str) -> None:
        self.runs = TemporalRuns(url)
        self.url = str(self.runs.url)

    # -- runs -----------------------------------------------------------------------------------

    async def arun(
        self, runner: Any, rb: Any, *, params: dict[str, Any] | None = None, detach: bool = False
    ) -> RunResult:
        """Start the run inside its ``runbook.run`` span, which lasts while this process follows
        it (with ``--detach``: only the start); the workers' attempt spans are its children."""
        from runbook.runner import new_run_id

        run_id = new_run_id(runner.clock.now())
        with tracing.run_span(run_id, Path(rb.path).stem, runner.env) as span:
            await self.runs.start(runner, rb, params, run_id=run_id)
            record = runner.store.get_run(run_id)
            if detach:
                span.set_status(R.RUNNING)
                return RunResult(
                    run_id=run_id,
                    status=R.RUNNING,
                    runbook=record.runbook_path,
                    env=record.env,
                    actor=record.actor,
                )
            result = await self._follow(runner, run_id)
            failed = result.status in (R.FAILED, R.ROLLED_BACK, R.ROLLBACK_FAILED)
            span.set_status(result.status, result.error if failed else None)
            return result

    async def _follow(self, runner: Any, run_id: str, *, resumed: bool = False) -> RunResult:
        record = runner.store.get_run(run_id)
        info = RunInfo(
            run_id,
            record.runbook_path,
            Path(record.runbook_path).stem,
            record.runbook_sha256,
            record.env,
            record.actor,
            record.params,
            resumed=resumed,
        )
        hook = runner.plugins.hook
        hook.runbook_run_started(run=info)

        def report(step: M.StepState) -> None:
            res = StepResult(
                step.name,
                status=step.status,
                error=step.error,
                attempts=step.attempts,
                duration=step.duration,
                reason=step.reason,
            )
            if step.rollback in R.ROLLBACK_OUTCOMES:
                res.status = res.rollback = step.rollback  # what the report line shows
                res.rollback_error = step.error
                hook.runbook_rollback_finished(run=info, step=step.name, result=res)
            else:
                hook.runbook_step_finished(run=info, step=step.name, result=res)

        state = await self.runs.follow(run_id, report)
        result = to_result(state, record, run_id)
        if state.interrupted:
            for name in state.interrupted:
                hook.runbook_progress(
                    run=info,
                    step=name,
                    message="interrupted: its worker died mid-step and it is not idempotent; "
                    f"decide with runbook resume {run_id} --retry-interrupted|--skip-interrupted",
                    fraction=None,
                )
        hook.runbook_run_finished(run=info, result=result)
        return result

    # -- decisions ------------------------------------------------------------------------------
    #
    # A decision is made exactly as for a local run, by runbook's own ``Decisions`` against the
    # shared store: who may decide (four eyes, approver lists, groups, strict authority), the
    # signature in a ``signers`` env (signed here, with the decider's key), ``approval_refused``
    # on a refusal. The Temporal update then tells the workflow, whose gate asks the run's
    # ``ApprovalPolicy`` again (in a worker, signatures verified) before anything runs.

    async def _tell(self, runner: Any, run_id: str, decision: M.Decision) -> dict[str, Any]:
        try:
            return await self.runs.decide(run_id, decision)
        except ApprovalError as exc:
            self._refused(runner, run_id, decision.step, decision.actor, str(exc))
            raise

    def _refused(self, runner: Any, run_id: str, step: str | None, actor: str, why: str) -> None:
        """DESIGN 11: every refused decision is audited, with the claimed actor and the reason."""
        record = runner.store.get_run(run_id)
        data = {"decision": "update", "claimed_actor": actor, "reason": why}
        runner.durable.recorder_for(record).emit("approval_refused", step, data, actor=actor)

    def _refuse_expired(
        self, runner: Any, run_id: str, decision: str, step: str | None, actor: str | None
    ) -> None:
        """A gate past its deadline takes no decision, as locally: its workflow's timer has fired
        (or is about to), and a worker records the expiry, even while none is up yet."""
        from runbook.decisions import Decisions
        from runbook.expiry import due

        durable = runner.durable
        record = runner.store.get_run(run_id)
        for name, state in due(durable, record, runner.clock.now()):
            why = f"approval of {name!r} expired at {state['deadline']}"
            Decisions(durable).refuse(record, decision, step, actor or durable.actor(), why)

    def approve(
        self,
        runner: Any,
        run_id: str,
        *,
        step: str | None = None,
        actor: str | None = None,
        comment: str = "",
        sign: Any = None,
    ) -> dict[str, Any]:
        self._refuse_expired(runner, run_id, "granted", step, actor)
        # Recorded and checked as for a local run (the runner's own DurableRuns, not the
        # routing Runner.approve, which sent the decision here).
        outcome = runner.durable.approve(run_id, step=step, actor=actor, comment=comment, sign=sign)
        decision = M.Decision("approved", outcome.get("actor") or actor or runner.resolved_actor())
        decision.step = outcome["step"]
        asyncio.run(self._tell(runner, run_id, decision))
        return {**outcome, "continues": True}  # no resume: the workflow goes on by itself

    async def adeny(
        self, runner: Any, run_id: str, *, actor: str | None = None, reason: str, sign: Any = None
    ) -> RunResult:
        from runbook.decisions import Decisions
        from runbook.store.base import ApprovalRecord

        store = runner.store
        record = store.get_run(run_id)
        durable = runner.durable
        decisions = Decisions(durable)
        claimed = actor or durable.actor()
        self._refuse_expired(runner, run_id, "denied", None, claimed)
        if record.status != R.PAUSED:
            decisions.refuse(
                record, "denied", None, claimed, f"run {run_id} is {record.status}, not paused"
            )
        rb = durable.load_run(record)
        who, proofs = decisions.authorize_settle(
            record, rb, decision="denied", actor=actor, key=sign
        )
        recorder = durable.recorder_for(record)
        for name, data in proofs.items():
            store.add_approval(
                ApprovalRecord(run_id, name, who, "denied", reason, runner.clock.now(), False, data)
            )
            event = {"reason": reason, "approver": who, **data}
            recorder.emit("approval_denied", name, event, actor=who)
        await self._tell(runner, run_id, M.Decision("denied", who))
        return await self._follow(runner, run_id, resumed=True)

    async def acancel(
        self, runner: Any, run_id: str, *, actor: str | None = None, sign: Any = None
    ) -> RunResult:
        from runbook.decisions import Decisions

        record = runner.store.get_run(run_id)
        durable = runner.durable
        rb = durable.load_run(record)
        who, _ = Decisions(durable).authorize_settle(
            record, rb, decision="cancelled", actor=actor, key=sign
        )
        await self._tell(runner, run_id, M.Decision("cancel", who))
        return await self._follow(runner, run_id, resumed=True)

    async def aresume(
        self,
        runner: Any,
        run_id: str,
        *,
        retry_interrupted: bool = False,
        skip_interrupted: bool = False,
        actor: str | None = None,
        sign: Any = None,
    ) -> RunResult:
        """Decide the interrupted steps if asked to, then follow the run (it never stopped).

        The choice is proven as ``resume`` proves it (signed in a ``signers`` env)."""
        state = await self.runs.progress(run_id)
        if state.interrupted and not (retry_interrupted or skip_interrupted):
            raise UsageError(
                undecided_message(run_id, state.interrupted, settling=False, died="its worker died")
            )
        kind = "retry" if retry_interrupted else "skip"
        who = actor or runner.resolved_actor()
        if state.interrupted:
            from runbook.decisions import Decisions

            prove = getattr(Decisions(runner.durable), "prove_interrupts", None)
            if prove is not None:
                record = runner.store.get_run(run_id)
                who, _ = prove(record, state.interrupted, kind, actor, sign)
        for name in state.interrupted:
            await self._tell(runner, run_id, M.Decision(kind, who, name))
        return await self._follow(runner, run_id, resumed=True)

    # -- the Executor protocol (attempts), which this executor never serves ----------------------

    async def run(self, attempt: Any) -> Any:
        raise UsageError("temporal:// runs whole runs on its workers, not single step attempts")

    def still_running(self, step: str) -> bool:
        return False

    async def wait_stopped(self, step: str, timeout: float) -> bool:
        return True

    async def aclose(self) -> None:
        return None
