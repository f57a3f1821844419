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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook import coordinator as C
from runbook import result as R
from runbook.collect import Runbook, bind_params
from runbook.context import RunInfo
from runbook.coordinator import is_redacted
from runbook.decisions import Decisions
from runbook.errors import ApprovalError, StoreCorrupt, UsageError
from runbook.locks.manager import LockManager
from runbook.params import Params, resolve_params
from runbook.protection import Protection
from runbook.recorder import HOST, Recorder
from runbook.redact import Redactor
from runbook.result import RunResult
from runbook.store.base import (
    ApprovalRecord,
    InterruptDecision,
    RunRecord,
    RunStore,
    StepRecord,
)

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

    if TYPE_CHECKING:
        # Runner's providers are opened on first use: read-only properties there.
        @property
        def store(self) -> RunStore | None: ...
        @property
        def sinks(self) -> list[AuditSink]: ...
        @property
        def lock_provider(self) -> LockProvider | None: ...

        def _actor(self) -> str: ...
        def load(self, runbook: Runbook | str | Path, *, fleet: Any = None) -> Runbook: ...
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

    def _load_stored(self, record: RunRecord) -> Runbook:
        """A stored run's runbook, collected for the hosts it started with (inventory, limit):
        resume, approve, deny and cancel must see the same per-host steps to roll them back."""
        from runbook.fleet import fleet_of

        return self.load(Path(record.runbook_path), fleet=fleet_of(record.options))

    def _reload(self, record: RunRecord, *, force: bool) -> Runbook:
        path = Path(record.runbook_path)
        if not path.is_file():
            raise UsageError(f"run {record.run_id}: its runbook {path} no longer exists")
        rb = self._load_stored(record)
        if rb.sha256 != record.runbook_sha256:
            refuse = Decisions(self).refuse
            if not force:
                refuse(
                    record,
                    "resume",
                    None,
                    self._actor(),
                    f"drift: run {record.run_id}: {path} changed since the run started; "
                    "resuming would run different code than was approved (use --force to "
                    "accept where the env allows it)",
                )
            protection, _ = self._env_settings(record.env)  # the run's env, not the shell's
            if not protection.allow_force:
                refuse(
                    record,
                    "resume",
                    None,
                    self._actor(),
                    f"drift: {path} changed since run {record.run_id} started, and --force is "
                    f"refused in env {record.env!r} (protection {protection.level})",
                )
        return bind_params(rb, self._params_for(rb, record))

    def _load_run(self, record: RunRecord) -> Runbook:
        """The run's runbook, its strategy groups expanded with the run's own parameters."""
        rb = self._load_stored(record)
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
        actor: str | None = None,
        sign: str | None = None,
    ) -> RunResult:
        return asyncio.run(
            self.aresume(
                run_id,
                retry_interrupted=retry_interrupted,
                skip_interrupted=skip_interrupted,
                force=force,
                actor=actor,
                sign=sign,
            )
        )

    async def aresume(
        self,
        run_id: str,
        *,
        retry_interrupted: bool = False,
        skip_interrupted: bool = False,
        force: bool = False,
        actor: str | None = None,
        sign: str | None = None,
    ) -> RunResult:
        """Continue a paused or crashed run. ``actor`` is a claimed identity, ``sign`` a key: a
        ``signers`` env needs ``--retry/--skip-interrupted`` decisions signed."""
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
                claimed=actor,
                sign=sign,
            ),
        )

    async def _resume(
        self,
        run_id: str,
        *,
        retry_interrupted: bool,
        skip_interrupted: bool,
        force: bool,
        claimed: str | None = None,
        sign: str | None = None,
    ) -> RunResult:
        from runbook.expiry import aapply_expired
        from runbook.plan import probes_of

        store = self._require_store()
        record = self._resumable(run_id)
        expired = await aapply_expired(self, record, guarded=False)
        if expired:
            Decisions(self).refuse(record, "resume", None, self._actor(), "; ".join(expired))
        rb = self._reload(record, force=force)
        forced = rb.sha256 != record.runbook_sha256
        params = self._params_for(rb, record)
        prior = self._steps(run_id)
        choice = C.RETRY if retry_interrupted else C.SKIP if skip_interrupted else None
        plan = self._plan(rb, record, prior, choice=choice, settling=False)
        redo: dict[str, str] = {}
        if not plan.rolling:
            # Drift: a gate is re-checked against probes run again now, not the ones approved.
            for gate in [n for n, s in prior.items() if s.status == R.AWAITING_APPROVAL]:
                if gate in rb.steps:
                    redo.update({p: C.RERUN for p in probes_of(rb, gate) if prior.get(p)})
            redo.update(dict.fromkeys(self._secret_outputs_to_redo(rb, prior), C.RERUN))
        actor = self._actor()
        resume_data: dict[str, Any] = {}
        if plan.human and choice is not None:  # a human decided exactly when a choice was given
            actor, signed = Decisions(self).prove_interrupts(
                record, list(plan.human), choice, claimed, sign
            )
            if signed:
                resume_data["signed_decision"] = signed
        for name in plan.human:
            store.add_interrupt_decision(
                InterruptDecision(run_id, name, plan.decisions[name], actor, self.clock.now())
            )
        changes: dict[str, Any] = {"runbook_sha256": rb.sha256} if forced else {}
        if forced:
            resume_data["forced"] = {
                "approved_sha256": record.runbook_sha256,
                "current_sha256": rb.sha256,
            }
        store.update_run(run_id, status=R.RUNNING, pid=os.getpid(), host=HOST, **changes)
        return await self._execute(
            rb,
            run_id,
            params,
            record.actor,
            resumed=True,
            prior=prior,
            env=record.env,
            resumed_by=actor,
            run_actor=record.actor,
            decisions={**redo, **plan.decisions},
            interrupted=plan.decisions,
            interrupted_rollbacks=plan.rollbacks,
            rollback_cause=record.options.get("rollback"),
            run_options=record.options,
            resume_data=resume_data,
        )

    def _steps(self, run_id: str) -> dict[str, StepRecord]:
        """The stored steps of a run, refused whole (exit 2, nothing changed) if one is not
        something runbook writes: deciding from a garbled status could re-run a finished step."""
        steps = self._require_store().get_steps(run_id)
        for name, rec in steps.items():
            if rec.status not in R.STEP_STATUSES:
                raise StoreCorrupt(
                    f"run {run_id}: step {name!r} has status {rec.status!r}, which runbook never "
                    f"writes (known: {', '.join(R.STEP_STATUSES)}); the run store is corrupt, "
                    "nothing was changed"
                )
            if rec.rollback not in R.ROLLBACK_STATES:
                raise StoreCorrupt(
                    f"run {run_id}: step {name!r} has rollback state {rec.rollback!r}, which "
                    "runbook never writes; the run store is corrupt, nothing was changed"
                )
        return steps

    def _plan(
        self,
        rb: Runbook,
        record: RunRecord,
        prior: Mapping[str, StepRecord],
        *,
        choice: str | None,
        settling: bool,
    ) -> _Plan:
        """Decide each interrupted step or rollback, or refuse (exit 2) when a human must."""
        rolling = (
            settling
            or record.options.get("rollback") is not None
            or C.rolling_back(rb.steps, prior)
        )
        decisions: dict[str, str] = {}
        rollbacks, human, undecided = set(), [], []
        for name, rollback in C.interrupted(rb.steps, prior):
            if rollback:
                rollbacks.add(name)
            auto = C.automatic_decision(rb.steps[name], rollback=rollback, rolling=rolling)
            if auto is not None:
                decisions[name] = auto
            elif choice is not None:
                decisions[name] = choice
                human.append(name)
            else:
                undecided.append(f"the rollback of {name}" if rollback else name)
        if undecided:
            what = ", ".join(undecided)
            if settling:
                raise UsageError(
                    f"run {record.run_id}: {what} was running when the process died and is not "
                    f"idempotent; decide first: runbook resume {record.run_id} "
                    "--retry-interrupted (run it again) or --skip-interrupted (leave it undone)"
                )
            raise UsageError(
                f"run {record.run_id}: {what} were running when the process "
                "died and are not idempotent; they may have half-happened. Check, then resume "
                "with --retry-interrupted (run them again) or --skip-interrupted (treat as "
                "not run)"
            )
        return _Plan(decisions, frozenset(rollbacks), tuple(human), rolling)

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
        self,
        run_id: str,
        *,
        step: str | None = None,
        actor: str | None = None,
        comment: str = "",
        sign: str | Path | None = None,
    ) -> dict[str, Any]:
        """Record an approval; say what the gate still waits for. ``resume`` continues the run.

        ``actor`` is the claimed identity; in a ``signers`` env the decision is signed with
        ``sign`` (or ``RUNBOOK_SIGNING_KEY``) and the actor is the principal it verifies as.
        """
        return Decisions(self).approve(run_id, step=step, actor=actor, comment=comment, sign=sign)

    def deny(
        self, run_id: str, *, actor: str | None = None, reason: str, sign: str | None = None
    ) -> RunResult:
        return asyncio.run(self.adeny(run_id, actor=actor, reason=reason, sign=sign))

    async def adeny(
        self, run_id: str, *, actor: str | None = None, reason: str, sign: str | None = None
    ) -> RunResult:
        """Deny a paused run's gate(s); ``actor`` is the claimed identity (see ``approve``)."""
        guard_actor = actor or self._actor()
        return await self._guarded(
            run_id, guard_actor, lambda: self._deny(run_id, actor, reason, sign)
        )

    async def _deny(
        self, run_id: str, actor: str | None, reason: str, sign: str | None
    ) -> RunResult:
        from runbook.expiry import aapply_expired

        store = self._require_store()
        record = store.get_run(run_id)
        decisions = Decisions(self)
        claimed = actor or self._actor()
        expired = await aapply_expired(self, record, guarded=False)
        if expired:
            decisions.refuse(record, "denied", None, claimed, "; ".join(expired))
        if record.status != R.PAUSED:
            decisions.refuse(
                record, "denied", None, claimed, f"run {run_id} is {record.status}, not paused"
            )
        rb = self._load_run(record)
        who, proofs = decisions.authorize_settle(
            record, rb, decision="denied", actor=actor, key=sign
        )
        recorder = self._recorder_for(record)
        for name, data in proofs.items():
            store.add_approval(
                ApprovalRecord(run_id, name, who, "denied", reason, self.clock.now(), False, data)
            )
            recorder.emit(
                "approval_denied", name, {"reason": reason, "approver": who, **data}, actor=who
            )
        return await self._settle(record, rb, deny=True, actor=who)

    def cancel(
        self, run_id: str, *, actor: str | None = None, sign: str | None = None
    ) -> RunResult:
        return asyncio.run(self.acancel(run_id, actor=actor, sign=sign))

    async def acancel(
        self, run_id: str, *, actor: str | None = None, sign: str | None = None
    ) -> RunResult:
        """Cancel a paused or dead run; strict envs allow it to its initiator and approvers."""

        async def cancel() -> RunResult:
            record = self._resumable(run_id, "cancel")
            rb = self._load_run(record)
            who, proofs = Decisions(self).authorize_settle(
                record, rb, decision="cancelled", actor=actor, key=sign
            )
            return await self._settle(record, rb, deny=False, actor=who, settle_data=proofs.get(""))

        return await self._guarded(run_id, actor or self._actor(), cancel)

    async def _settle(
        self,
        record: RunRecord,
        rb: Runbook,
        *,
        deny: bool,
        actor: str | None = None,
        failed_gates: Mapping[str, str] | None = None,
        settle_data: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """End a paused or dead run without running anything new, rolling back what completed."""
        store = self._require_store()
        params = self._params_for(rb, record)
        prior = self._steps(record.run_id)
        plan = self._plan(rb, record, prior, choice=None, settling=True)
        # Durable before anything is undone: a process that dies now still leaves a run that
        # resume rolls back, never one that resume takes forward.
        cause = C.FAILED if deny or record.options.get("rollback") == C.FAILED else C.CANCELLED
        options = {**record.options, "rollback": cause}
        store.update_run(
            record.run_id, status=R.RUNNING, pid=os.getpid(), host=HOST, options=options
        )
        return await self._execute(
            rb,
            record.run_id,
            params,
            record.actor,
            resumed=True,
            prior=prior,
            deny_only=True,
            cancel=cause == C.CANCELLED,
            env=record.env,
            resumed_by=actor,
            run_actor=record.actor,
            failed_gates=dict(failed_gates or {}),
            settle_data=dict(settle_data or {}),
            decisions=plan.decisions,
            interrupted=plan.decisions,
            interrupted_rollbacks=plan.rollbacks,
            rollback_cause=cause,
            run_options=options,
        )


@dataclass(frozen=True)
class _Plan:
    decisions: dict[str, str]  # interrupted step -> what resume does with it
    rollbacks: frozenset[str]  # those whose rollback (not the step) was interrupted
    human: tuple[str, ...]  # decided by the operator's flag (recorded as such)
    rolling: bool  # the run had begun to roll back: it goes on doing so
