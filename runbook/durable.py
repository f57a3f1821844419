"""Operations on stored runs: resume, approve, deny, cancel.

A run outlives its process: these methods load a run from the store, check that it may continue
(its env's rules, who may approve, what was interrupted), and drive it through the engine again.
They are a mixin of ``Runner`` so that a stored run is continued with exactly the providers and
plugins a new run would get.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook import result as R
from runbook.approvals import ApprovalPolicy, granted_by
from runbook.collect import Runbook, bind_params
from runbook.context import RunInfo
from runbook.engine import is_redacted
from runbook.errors import ApprovalError, UsageError
from runbook.locks.manager import LockManager
from runbook.params import Params, resolve_params
from runbook.protection import Protection
from runbook.recorder import HOST, Recorder
from runbook.redact import Redactor
from runbook.result import RunResult
from runbook.store.base import ApprovalRecord, InterruptDecision, RunRecord, RunStore

if TYPE_CHECKING:
    from runbook.audit.events import AuditSink
    from runbook.clock import Clock
    from runbook.locks.base import LockProvider
    from runbook.plugins import Plugins


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DurableRuns:
    """Resume, approve, deny and cancel stored runs (mixed into ``Runner``)."""

    # Provided by Runner.
    env: str
    params: dict[str, Any]
    protection: Protection
    approvers: tuple[str, ...]
    config: Any
    lease: float
    dry_run: bool
    clock: Clock
    plugins: Plugins
    store: RunStore | None
    sinks: list[AuditSink]
    lock_provider: LockProvider | None

    if TYPE_CHECKING:

        def _actor(self) -> str: ...
        def load(self, runbook: Runbook | str | Path) -> Runbook: ...
        async def _execute(
            self, rb: Runbook, run_id: str, params: Params, actor: str, **kw: Any
        ) -> RunResult: ...

    async def _guarded(self, run_id: str, actor: str, work: Any) -> RunResult:
        guard = await self._guard(run_id, actor)
        try:
            return await work()
        finally:
            if guard is not None:
                await guard.release_all()
                await guard.aclose()

    async def _guard(self, run_id: str, actor: str) -> LockManager | None:
        """Hold ``run:<id>`` while this process drives a stored run.

        The run's own locks are owned by the run id, so that a paused run keeps them across
        processes; this one is owned by *this process*, so a second host resuming the same run
        at the same time is refused (exit 5) instead of running steps twice.
        """
        if self.lock_provider is None or self.dry_run:
            return None
        guard = LockManager(
            self.lock_provider,
            clock=self.clock,
            owner=f"{HOST}:{os.getpid()}:{secrets.token_hex(4)}",
            actor=actor,
            lease=self.lease,
            timeout=0.0,
        )
        await guard.acquire([f"run:{run_id}"])
        return guard

    def _env_settings(self, env: str) -> tuple[Protection, tuple[str, ...]]:
        """Protection and approvers of the env a stored run was started in.

        A run resumed, approved or denied from another process must keep the rules of *its* env
        (a prod run must not finish under dev protection because the resuming shell said nothing).
        """
        if env == self.env:
            return self.protection, self.approvers
        if self.config is not None:
            env_cfg = self.config.env(env)
            return env_cfg.protection, tuple(env_cfg.approvers)
        # No configuration to consult: never weaker than the standard level.
        if self.protection.level == "none":
            return Protection.for_level("standard"), self.approvers
        return self.protection, self.approvers

    def _require_store(self) -> RunStore:
        if self.store is None:
            raise UsageError("this runner has no run store")
        return self.store

    def _reload(self, record: RunRecord, *, force: bool) -> Runbook:
        path = Path(record.runbook_path)
        if not path.is_file():
            raise UsageError(f"run {record.run_id}: its runbook {path} no longer exists")
        rb = self.load(path)
        if rb.sha256 != record.runbook_sha256:
            if not force:
                raise UsageError(
                    f"run {record.run_id}: {path} changed since the run started; resuming would "
                    "run different code than was approved (use --force to accept)"
                )
            if not self.protection.allow_force:
                raise UsageError(
                    f"--force is refused in env {self.env!r} (protection {self.protection.level})"
                )
        return bind_params(rb, self._params_for(rb, record))

    def _load_run(self, record: RunRecord) -> Runbook:
        """The run's runbook, its strategy groups expanded with the run's own parameters."""
        rb = self.load(record.runbook_path)
        return bind_params(rb, self._params_for(rb, record))

    def _params_for(self, rb: Runbook, record: RunRecord) -> Params:
        given = {
            k: v for k, v in record.params.items() if not (k in rb.params and rb.params[k].secret)
        }
        given = {k: v for k, v in given.items() if k in rb.params}
        given.update(self.params)
        return resolve_params(rb.params, given)

    def _resumable(self, run_id: str, action: str = "resume") -> RunRecord:
        record = self._require_store().get_run(run_id)
        if record.status == R.RUNNING:
            if (
                record.host == HOST
                and record.pid
                and record.pid != os.getpid()
                and _pid_alive(record.pid)
            ):
                raise UsageError(f"run {run_id} is still running (pid {record.pid} on {HOST})")
        elif record.status != R.PAUSED:
            raise UsageError(
                f"run {run_id} has ended ({record.status.replace('_', ' ')}); nothing to {action}"
            )
        return record

    def resume(
        self,
        run_id: str,
        *,
        retry_interrupted: bool = False,
        skip_interrupted: bool = False,
        force: bool = False,
    ) -> RunResult:
        return asyncio.run(
            self.aresume(
                run_id,
                retry_interrupted=retry_interrupted,
                skip_interrupted=skip_interrupted,
                force=force,
            )
        )

    async def aresume(
        self,
        run_id: str,
        *,
        retry_interrupted: bool = False,
        skip_interrupted: bool = False,
        force: bool = False,
    ) -> RunResult:
        if retry_interrupted and skip_interrupted:
            raise UsageError("choose one of --retry-interrupted and --skip-interrupted")
        return await self._guarded(
            run_id,
            self._actor(),
            lambda: self._resume(
                run_id,
                retry_interrupted=retry_interrupted,
                skip_interrupted=skip_interrupted,
                force=force,
            ),
        )

    async def _resume(
        self, run_id: str, *, retry_interrupted: bool, skip_interrupted: bool, force: bool
    ) -> RunResult:
        store = self._require_store()
        record = self._resumable(run_id)
        rb = self._reload(record, force=force)
        params = self._params_for(rb, record)
        prior = store.get_steps(run_id)
        interrupted = [n for n, s in prior.items() if s.status == R.STEP_RUNNING and n in rb.steps]
        rerun = {n for n in interrupted if rb.steps[n].options.idempotent}
        rerun |= self._secret_outputs_to_redo(rb, prior)
        undecided = [n for n in interrupted if n not in rerun]
        actor = self._actor()
        if undecided and not (retry_interrupted or skip_interrupted):
            raise UsageError(
                f"run {run_id}: step(s) {', '.join(undecided)} were running when the process "
                "died and are not idempotent; they may have half-happened. Check, then resume "
                "with --retry-interrupted (run them again) or --skip-interrupted (treat as "
                "not run)"
            )
        choice = "retry" if retry_interrupted else "skip"
        for name in undecided:
            store.add_interrupt_decision(
                InterruptDecision(run_id, name, choice, actor, self.clock.now())
            )
        store.update_run(run_id, status=R.RUNNING, pid=os.getpid(), host=HOST)
        retried = frozenset(rerun | (set(undecided) if retry_interrupted else set()))
        skipped = frozenset(undecided) if skip_interrupted else frozenset()
        return await self._execute(
            rb,
            run_id,
            params,
            record.actor,
            resumed=True,
            prior=prior,
            env=record.env,
            resumed_by=actor,
            rerun_interrupted=retried,
            skip_interrupted=skipped,
            run_actor=record.actor,
            decisions={n: choice for n in undecided},
        )

    @staticmethod
    def _secret_outputs_to_redo(rb: Runbook, prior: Mapping[str, Any]) -> set[str]:
        """Finished steps whose output held a secret (stored masked) that a pending step needs.

        The secret itself was never stored, so the output must be produced again: allowed for an
        idempotent step, refused (exit 2, nothing run) for any other.
        """
        done = {n for n, rec in prior.items() if rec.status in R.DONE_STATUSES}
        redo, refused = set(), []
        for name, rec in prior.items():
            if (
                rec.status != R.STEP_SUCCEEDED
                or not is_redacted(rec.output)
                or name not in rb.steps
            ):
                continue
            needed_by = [n for n, s in rb.steps.items() if name in s.deps and n not in done]
            if not needed_by:
                continue
            if rb.steps[name].options.idempotent:
                redo.add(name)
            else:
                refused.append(f"{name} (needed by {', '.join(needed_by)})")
        if refused:
            raise UsageError(
                f"cannot resume: the output of {'; '.join(refused)} contained a secret, which is "
                "never stored; declare the step idempotent=True so resume can produce it again"
            )
        return redo

    def _gated(self, rb: Runbook, record: RunRecord, step: str | None) -> str:
        steps = self._require_store().get_steps(record.run_id)
        waiting = [n for n, s in steps.items() if s.status == R.AWAITING_APPROVAL]
        if step is not None:
            if step not in waiting:
                raise ApprovalError(
                    f"step {step!r} of run {record.run_id} is not awaiting "
                    f"approval (waiting: {', '.join(waiting) or 'none'})"
                )
            return step
        if not waiting:
            raise ApprovalError(f"run {record.run_id} has no step awaiting approval")
        if len(waiting) > 1:
            raise ApprovalError(
                f"several steps await approval ({', '.join(waiting)}): name one with --step"
            )
        return waiting[0]

    def _recorder_for(self, record: RunRecord) -> Recorder:
        info = RunInfo(
            record.run_id,
            record.runbook_path,
            Path(record.runbook_path).stem,
            record.runbook_sha256,
            record.env,
            record.actor,
            record.params,
        )
        want = self.plugins.has_impls("runbook_event")
        hook = self.plugins.hook
        listeners = [lambda e: hook.runbook_event(run=info, event=e)] if want else []
        return Recorder(
            info, self.sinks, clock=self.clock, redactor=Redactor(), listeners=listeners
        )

    def approve(
        self, run_id: str, *, step: str | None = None, actor: str | None = None, comment: str = ""
    ) -> dict[str, Any]:
        """Record an approval; say how many more are needed. ``resume`` continues the run."""
        store = self._require_store()
        record = store.get_run(run_id)
        if record.status != R.PAUSED:
            raise ApprovalError(f"run {run_id} is {record.status}, not paused for approval")
        rb = self._load_run(record)
        name = self._gated(rb, record, step)
        approval = rb.steps[name].options.approval
        assert approval is not None
        actor = actor or self._actor()
        protection, approvers = self._env_settings(record.env)
        policy = ApprovalPolicy(run_id, record.actor, protection, store, approvers)
        policy.validate(name, approval, actor)
        store.add_approval(
            ApprovalRecord(run_id, name, actor, "granted", comment, self.clock.now())
        )
        granted = granted_by(store.approvals(run_id, name))
        self._recorder_for(record).emit(
            "approval_granted",
            name,
            {
                "comment": comment,
                "approver": actor,
                "approvals": len(granted),
                "needed": approval.min,
            },
            actor=actor,
        )
        return {
            "run_id": run_id,
            "step": name,
            "approvers": sorted(granted),
            "needed": approval.min,
            "satisfied": len(granted) >= approval.min,
        }

    def deny(self, run_id: str, *, actor: str | None = None, reason: str) -> RunResult:
        return asyncio.run(self.adeny(run_id, actor=actor, reason=reason))

    async def adeny(self, run_id: str, *, actor: str | None = None, reason: str) -> RunResult:
        actor = actor or self._actor()
        return await self._guarded(run_id, actor, lambda: self._deny(run_id, actor, reason))

    async def _deny(self, run_id: str, actor: str, reason: str) -> RunResult:
        store = self._require_store()
        record = store.get_run(run_id)
        if record.status != R.PAUSED:
            raise ApprovalError(f"run {run_id} is {record.status}, not paused for approval")
        rb = self._load_run(record)
        steps = store.get_steps(run_id)
        waiting = [n for n, s in steps.items() if s.status == R.AWAITING_APPROVAL]
        recorder = self._recorder_for(record)
        for name in waiting:
            store.add_approval(
                ApprovalRecord(run_id, name, actor, "denied", reason, self.clock.now())
            )
            recorder.emit(
                "approval_denied", name, {"reason": reason, "approver": actor}, actor=actor
            )
        return await self._settle(record, rb, deny=True, actor=actor)

    def cancel(self, run_id: str, *, actor: str | None = None) -> RunResult:
        return asyncio.run(self.acancel(run_id, actor=actor))

    async def acancel(self, run_id: str, *, actor: str | None = None) -> RunResult:
        actor = actor or self._actor()

        async def cancel() -> RunResult:
            record = self._resumable(run_id, "cancel")
            rb = self._load_run(record)
            return await self._settle(record, rb, deny=False, actor=actor)

        return await self._guarded(run_id, actor, cancel)

    async def _settle(
        self, record: RunRecord, rb: Runbook, *, deny: bool, actor: str | None = None
    ) -> RunResult:
        """End a paused or dead run without running anything new, rolling back what completed."""
        store = self._require_store()
        params = self._params_for(rb, record)
        prior = store.get_steps(record.run_id)
        store.update_run(record.run_id, status=R.RUNNING, pid=os.getpid(), host=HOST)
        return await self._execute(
            rb,
            record.run_id,
            params,
            record.actor,
            resumed=True,
            prior=prior,
            deny_only=True,
            cancel=not deny,
            env=record.env,
            resumed_by=actor,
            run_actor=record.actor,
        )
