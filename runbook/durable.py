"""Operations on stored runs: resume, approve, deny, cancel.

A run outlives its process: these operations load a run from the store, check that it may
continue (its env's rules, who may approve, what was interrupted), and drive it through the
engine again. ``DurableRuns`` is a service a ``Runner`` composes: it receives the runner's
``Providers`` and ``Envs`` and the runner's own way to load a runbook and drive a run, so a
stored run is continued with exactly the providers, plugins and per-run setup a new run gets.
``Runner.resume/approve/deny/cancel`` are the public API; they delegate here (after sending a
run driven by a remote executor to that executor). ``runbook.decisions`` and ``runbook.expiry``
use the public helpers below (``recorder_for``, ``load_run``, ``guarded``, ``settle``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from runbook import interruptions as C
from runbook import recovery, trail
from runbook import result as R
from runbook.audit.pipeline import HOST, Recorder
from runbook.collect import Runbook, bind_params
from runbook.context import RunInfo
from runbook.decisions import Decisions
from runbook.envs import Envs
from runbook.errors import UsageError
from runbook.locks.manager import LockManager
from runbook.params import Params, resolve_params
from runbook.providers import Providers
from runbook.redact import Redactor
from runbook.result import RunResult
from runbook.store.base import ApprovalRecord, InterruptDecision, RunRecord, RunStore, StepRecord

Execute = Callable[..., Awaitable[RunResult]]


class DurableRuns:
    """Resume, approve, deny and cancel the stored runs of one runner's providers and envs.

    ``load(path, fleet=...)`` collects a runbook as the runner does (its resources, plugins,
    fakes); ``execute(rb, run_id, params, actor, **setup)`` drives a run through the engine with
    the runner's per-run setup; ``actor()`` is who acts when no actor is named.
    """

    def __init__(
        self,
        providers: Providers,
        envs: Envs,
        *,
        params: Mapping[str, Any],
        lease: float,
        dry_run: bool,
        actor: Callable[[], str],
        load: Callable[..., Runbook],
        execute: Execute,
    ) -> None:
        self.providers = providers
        self.envs = envs
        self.params = params
        self.lease = lease
        self.dry_run = dry_run
        self.actor = actor
        self._load = load
        self._execute = execute

    # -- the preamble every operation shares -------------------------------------------------

    async def guarded(self, run_id: str, actor: str, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``work()`` holding ``run:<id>``: used by every operation here, and by an expired
        gate settled outside one (runbook.expiry)."""
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
        provider = self.providers.lock_provider
        if provider is None or self.dry_run:
            return None
        guard = LockManager(
            provider,
            clock=self.providers.clock,
            owner=f"{HOST}:{os.getpid()}:{secrets.token_hex(4)}",
            actor=actor,
            lease=self.lease,
            timeout=0.0,
        )
        await guard.acquire([f"run:{run_id}"])
        return guard

    def recorder_for(self, record: RunRecord) -> Recorder:
        """The audit recorder of a stored run outside its execution: decisions, refusals and
        expiries on it (runbook.decisions, runbook.expiry, a remote executor) are recorded in its
        trail, through the runner's sinks and to the plugins listening for events."""
        info = RunInfo(
            record.run_id,
            record.runbook_path,
            Path(record.runbook_path).stem,
            record.runbook_sha256,
            record.env,
            record.actor,
            record.params,
        )
        plugins = self.providers.plugins
        want = plugins.has_impls("runbook_event")
        hook = plugins.hook
        listeners = [lambda e: hook.runbook_event(run=info, event=e)] if want else []
        return Recorder(
            info,
            self.providers.sinks,
            clock=self.providers.clock,
            redactor=Redactor(),
            listeners=listeners,
        )

    # -- a stored run's runbook ---------------------------------------------------------------

    def _load_stored(self, record: RunRecord) -> Runbook:
        """A stored run's runbook, collected for the hosts it started with (inventory, limit):
        resume, approve, deny and cancel must see the same per-host steps to roll them back."""
        from runbook.fleet import fleet_of

        path = Path(record.runbook_path)
        if not path.is_file():  # cancel too: the rollbacks of what completed are in that file
            raise UsageError(
                f"run {record.run_id}: its runbook {path} no longer exists; put back the file "
                f"the run started with (sha256 {record.runbook_sha256[:12]}): resume, cancel and "
                "the gate's decisions need its steps and their rollbacks"
            )
        return self._load(path, fleet=fleet_of(record.options))

    def load_run(self, record: RunRecord) -> Runbook:
        """The run's runbook, its strategy groups expanded with the run's own parameters: what a
        decision on the run is checked against (here, in runbook.decisions and the CLI)."""
        rb = self._load_stored(record)
        return bind_params(rb, self._params_for(rb, record))

    def _reload(self, record: RunRecord, *, force: bool) -> Runbook:
        path = Path(record.runbook_path)
        rb = self._load_stored(record)
        if rb.sha256 != record.runbook_sha256:
            refuse = Decisions(self).refuse
            if not force:
                refuse(
                    record,
                    "resume",
                    None,
                    self.actor(),
                    f"drift: run {record.run_id}: {path} changed since the run started; "
                    "resuming would run different code than was approved (use --force to "
                    "accept where the env allows it)",
                )
            protection, _ = self.envs.settings(record.env)  # the run's env, not the shell's
            if not protection.allow_force:
                refuse(
                    record,
                    "resume",
                    None,
                    self.actor(),
                    f"drift: {path} changed since run {record.run_id} started, and --force is "
                    f"refused in env {record.env!r} (protection {protection.level})",
                )
        return bind_params(rb, self._params_for(rb, record))

    def _params_for(self, rb: Runbook, record: RunRecord) -> Params:
        given = {
            k: v for k, v in record.params.items() if not (k in rb.params and rb.params[k].secret)
        }
        given = {k: v for k, v in given.items() if k in rb.params}
        given.update(self.params)
        return resolve_params(rb.params, given)

    def _steps_of(self, store: RunStore, record: RunRecord) -> dict[str, StepRecord]:
        """The run's stored steps, with what its leading trail holds and the store may have lost
        (a kill between the two writes, a power cut: runbook.trail) rolled forward."""
        prior = recovery.stored_steps(store, record.run_id)
        return trail.rolled_forward(store, record, self.providers.sinks, prior)

    # -- resume -------------------------------------------------------------------------------

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
        return await self.guarded(
            run_id,
            self.actor(),
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

        store = self.providers.require_store()
        record = recovery.check_resumable(store.get_run(run_id))
        expired = await aapply_expired(self, record, guarded=False)
        if expired:
            Decisions(self).refuse(record, "resume", None, self.actor(), "; ".join(expired))
        rb = self._reload(record, force=force)
        forced = rb.sha256 != record.runbook_sha256
        params = self._params_for(rb, record)
        prior = self._steps_of(store, record)
        choice = C.RETRY if retry_interrupted else C.SKIP if skip_interrupted else None
        plan = recovery.plan(rb, record, prior, choice=choice, settling=False)
        redo: dict[str, str] = {}
        if not plan.rolling:
            # Drift: a gate is re-checked against probes run again now, not the ones approved.
            for gate in [n for n, s in prior.items() if s.status == R.AWAITING_APPROVAL]:
                if gate in rb.steps:
                    redo.update({p: C.RERUN for p in probes_of(rb, gate) if prior.get(p)})
            redo.update(dict.fromkeys(recovery.secret_outputs_to_redo(rb, prior), C.RERUN))
        actor = self.actor()
        resume_data: dict[str, Any] = {}
        if plan.human and choice is not None:  # a human decided exactly when a choice was given
            actor, signed = Decisions(self).prove_interrupts(
                record, list(plan.human), choice, claimed, sign
            )
            if signed:
                resume_data["signed_decision"] = signed
        for name in plan.human:
            store.add_interrupt_decision(
                InterruptDecision(
                    run_id, name, plan.decisions[name], actor, self.providers.clock.now()
                )
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

    # -- decisions ----------------------------------------------------------------------------

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

    async def adeny(
        self, run_id: str, *, actor: str | None = None, reason: str, sign: str | None = None
    ) -> RunResult:
        """Deny a paused run's gate(s); ``actor`` is the claimed identity (see ``approve``)."""
        guard_actor = actor or self.actor()
        return await self.guarded(
            run_id, guard_actor, lambda: self._deny(run_id, actor, reason, sign)
        )

    async def _deny(
        self, run_id: str, actor: str | None, reason: str, sign: str | None
    ) -> RunResult:
        from runbook.expiry import aapply_expired

        store = self.providers.require_store()
        record = store.get_run(run_id)
        decisions = Decisions(self)
        claimed = actor or self.actor()
        expired = await aapply_expired(self, record, guarded=False)
        if expired:
            decisions.refuse(record, "denied", None, claimed, "; ".join(expired))
        if record.status != R.PAUSED:
            decisions.refuse(
                record, "denied", None, claimed, f"run {run_id} is {record.status}, not paused"
            )
        rb = self.load_run(record)
        who, proofs = decisions.authorize_settle(
            record, rb, decision="denied", actor=actor, key=sign
        )
        recorder = self.recorder_for(record)
        for name, data in proofs.items():
            # Audited before it is stored (runbook.decisions.approve): no denial without its event.
            recorder.emit(
                "approval_denied", name, {"reason": reason, "approver": who, **data}, actor=who
            )
            store.add_approval(
                ApprovalRecord(
                    run_id, name, who, "denied", reason, self.providers.clock.now(), False, data
                )
            )
        return await self.settle(record, rb, deny=True, actor=who)

    async def acancel(
        self, run_id: str, *, actor: str | None = None, sign: str | None = None
    ) -> RunResult:
        """Cancel a paused or dead run; strict envs allow it to its initiator and approvers."""

        async def cancel() -> RunResult:
            store = self.providers.require_store()
            record = recovery.check_resumable(store.get_run(run_id), "cancel")
            rb = self.load_run(record)
            who, proofs = Decisions(self).authorize_settle(
                record, rb, decision="cancelled", actor=actor, key=sign
            )
            return await self.settle(record, rb, deny=False, actor=who, settle_data=proofs.get(""))

        return await self.guarded(run_id, actor or self.actor(), cancel)

    async def settle(
        self,
        record: RunRecord,
        rb: Runbook,
        *,
        deny: bool,
        actor: str | None = None,
        failed_gates: Mapping[str, str] | None = None,
        settle_data: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """End a paused or dead run without running anything new, rolling back what completed:
        a deny, a cancel, or an expired gate (runbook.expiry)."""
        store = self.providers.require_store()
        params = self._params_for(rb, record)
        prior = self._steps_of(store, record)
        plan = recovery.plan(rb, record, prior, choice=None, settling=True)
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
