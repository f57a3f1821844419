"""The user's side: start a run on Temporal, follow it, send it decisions.

``start`` does what ``Runner.arun`` does before anything runs (protection, params, lock names),
records the run in the configured store, and starts its workflow; from then on the run belongs to
the workers, and the process that started it may follow it, leave (``--detach``) or die. A
decision (approve, deny, cancel, a choice for an interrupted step) is a Temporal update that the
workflow validates with runbook's own rules before it enters the history.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from runbook import backoff, tracing
from runbook import result as R
from runbook.audit.pipeline import HOST
from runbook.collect import Runbook
from runbook.errors import ApprovalError, RunbookError, UsageError
from runbook.params import resolve_params
from runbook.result import RunResult, StepResult
from runbook.store.base import RunRecord
from runbook_temporal import messages as M
from runbook_temporal.url import TemporalURL
from runbook_temporal.worker import connect

QUERY_PATIENCE = 30.0  # seconds a query may keep failing while a workflow changes workers
_TRANSIENT = frozenset(
    {
        RPCStatusCode.CANCELLED,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)


def transient(exc: RPCError) -> bool:
    """Whether a failed call may succeed if made again: the server or the worker answering was
    briefly away (a worker died with the workflow in its cache), not the request refused."""
    if exc.status in _TRANSIENT:
        return True
    text = str(exc).lower()
    return exc.status == RPCStatusCode.UNKNOWN and (
        "context canceled" in text or "deadline exceeded" in text
    )


FINAL_STEP = frozenset(
    {
        R.STEP_SUCCEEDED,
        R.STEP_FAILED,
        R.SKIPPED,
        R.AWAITING_APPROVAL,
        R.DENIED,
        R.STEP_CANCELLED,
        R.STEP_ROLLED_BACK,
        R.STEP_ROLLBACK_FAILED,
    }
)


def workflow_id(run_id: str) -> str:
    return f"runbook-{run_id}"


def relative(path: Path, root: Path) -> str:
    """The runbook's path as workers find it: relative to the project root when inside it."""
    path = path.resolve()
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


class TemporalRuns:
    """Runs on one Temporal service (one ``temporal://`` URL)."""

    def __init__(self, url: str | TemporalURL) -> None:
        self.url = url if isinstance(url, TemporalURL) else TemporalURL.parse(url)
        self._client: Any = None

    async def client(self) -> Any:
        if self._client is None:
            self._client = await connect(self.url)
        return self._client

    async def handle(self, run_id: str) -> WorkflowHandle[Any, Any]:
        return (await self.client()).get_workflow_handle(workflow_id(run_id))

    # -- starting -----------------------------------------------------------------------------

    async def start(
        self,
        runner: Any,
        rb: Runbook,
        params: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> str:
        """Check, record and start a run; return its run id. Nothing has run when this raises.

        The trace context current here (the run span ``exec`` opened) travels in the run's
        input, so every step attempt's span, in whichever worker, is a child of it."""
        from runbook.runner import new_run_id

        if runner.dry_run:
            raise UsageError("--dry-run runs in this process: leave out --executor")
        runner.check_protection(rb)
        given = {**runner.params, **(params or {})}
        secret = sorted(k for k in given if k in rb.params and rb.params[k].secret)
        if secret:
            raise UsageError(
                f"secret parameter(s) {', '.join(secret)} cannot travel to Temporal workers "
                "(their values would be stored in its history): set them in the workers' "
                "environment (param(..., env=...)) instead of -p"
            )
        resolved = resolve_params(rb.params, given, config_defaults=runner.env_params)
        runner.check_locks(rb, resolved)
        actor = runner.resolved_actor()
        store = runner.store
        if store is None:
            raise UsageError("a run on Temporal needs a run store that every worker shares")
        root = getattr(runner.config, "root", None) or Path.cwd()
        run_id = run_id or new_run_id(runner.clock.now())
        ref = M.RunRef(
            run_id=run_id,
            runbook=relative(Path(rb.path), root),
            sha256=rb.sha256,
            env=runner.env,
            actor=actor,
            params=resolved.public(),
        )
        policy = M.Policy(yes=bool(runner.yes))
        inp = M.RunInput(
            run=ref,
            policy=policy,
            queue=self.url.queue,
            heartbeat=self.url.heartbeat,
            max_parallel=runner.max_parallel,
            trace=tracing.inject(),
        )
        client = await self.client()  # unreachable Temporal: refused before the run is recorded
        store.create_run(
            RunRecord(
                run_id=run_id,
                runbook_path=str(Path(rb.path).resolve()),
                runbook_sha256=rb.sha256,
                env=runner.env,
                actor=actor,
                status=R.RUNNING,
                params=resolved.public(),
                created_at=runner.clock.now(),
                host=HOST,
                pid=os.getpid(),
                options={"max_parallel": runner.max_parallel, "executor": str(self.url)},
            )
        )
        await client.start_workflow(
            M.WORKFLOW, inp, id=workflow_id(run_id), task_queue=self.url.queue
        )
        return run_id

    # -- following ----------------------------------------------------------------------------

    async def progress(self, run_id: str, *, patience: float = QUERY_PATIENCE) -> M.Progress:
        """The run's state, asked of its workflow (a query, answered by a worker).

        When the worker that holds the workflow dies, the server fails queries for a moment
        (``context canceled``, a deadline) until another worker takes the workflow over: the run
        is changing hands, not broken. Such failures are retried for ``patience`` seconds.
        """
        handle = await self.handle(run_id)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + patience
        attempt = 0
        while True:
            try:
                return await handle.query("progress", result_type=M.Progress)
            except RPCError as exc:
                attempt += 1
                if not transient(exc) or loop.time() >= give_up:
                    raise
                await asyncio.sleep(backoff.delay(attempt, 0.1, 2.0))

    async def follow(
        self,
        run_id: str,
        on_step: Callable[[M.StepState], None] | None = None,
        *,
        every: float = 0.2,
        until_paused: bool = True,
    ) -> M.Progress:
        """Poll the run until it ends (or waits for a human); report each step as it ends."""
        seen: dict[str, str] = {}
        while True:
            try:
                state = await self.progress(run_id)
            except RPCError as exc:
                raise RunbookError(f"run {run_id}: cannot query its workflow: {exc}") from None
            for name, step in state.steps.items():
                if step.status not in FINAL_STEP:
                    continue
                key = f"{step.status}/{step.rollback}"  # a rollback is reported on its own
                if seen.get(name) != key:
                    seen[name] = key
                    if on_step is not None:
                        on_step(step)
            if state.finished or (until_paused and state.status == R.PAUSED):
                return state
            await asyncio.sleep(every)

    # -- deciding -----------------------------------------------------------------------------

    async def decide(self, run_id: str, decision: M.Decision) -> dict[str, Any]:
        """Send a decision; an ``ApprovalError`` carries the workflow's reason for refusing it."""
        handle = await self.handle(run_id)
        try:
            return await handle.execute_update("decide", decision, result_type=dict)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            raise ApprovalError(message) from None
        except RPCError as exc:
            raise ApprovalError(f"run {run_id}: {exc}") from None


def to_result(state: M.Progress, ref: RunRecord | None, run_id: str) -> RunResult:
    """The followed run as a ``RunResult``: what the CLI prints and turns into an exit code."""
    steps = {}
    for name, s in state.steps.items():
        res = StepResult(name, status=s.status, error=s.error, attempts=s.attempts, reason=s.reason)
        res.output = state.outputs.get(name)
        res.duration = s.duration
        steps[name] = res
    return RunResult(
        run_id=run_id,
        status=state.status,
        runbook=ref.runbook_path if ref else "",
        env=ref.env if ref else "",
        actor=ref.actor if ref else "",
        steps=steps,
        error=state.error,
        lock_denied=state.lock_denied,
    )
