"""``Runner``: the public entry point that assembles a run and drives it through the engine.

It turns configuration into providers (store, audit sinks, locks, router, notifiers, all opened by
URL through plugins), checks what must be checked before anything runs (params, protection), and
offers the durable-run operations: resume, approve, deny, cancel.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from random import Random
from typing import Any

from runbook import result as R
from runbook.approvals import ApprovalPolicy
from runbook.audit.events import AuditSink
from runbook.clock import Clock, SystemClock
from runbook.collect import Runbook, load
from runbook.context import Ctx, RunInfo
from runbook.engine import Execution, RunSetup, is_redacted
from runbook.errors import ApprovalError, RunbookError, UsageError
from runbook.locks.base import LockProvider
from runbook.locks.manager import LockManager
from runbook.params import Params, resolve_params
from runbook.plugins import Plugins, configure
from runbook.protection import Protection
from runbook.recorder import HOST, Recorder
from runbook.redact import Redactor
from runbook.result import RunResult
from runbook.scope import Injector, ResourceScope
from runbook.store.base import ApprovalRecord, InterruptDecision, RunRecord, RunStore

_LIFECYCLE = (
    "runbook_run_started",
    "runbook_step_started",
    "runbook_step_finished",
    "runbook_rollback_finished",
    "runbook_run_finished",
    "runbook_event",
    "runbook_progress",
)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and readable: ``20261123-181530-a3f9c2``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Runner:
    def __init__(
        self,
        env: str = "dev",
        params: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
        store: str | RunStore | None = "memory://",
        audit: Sequence[str | Mapping[str, Any] | AuditSink] = ("memory://",),
        locks: str | LockProvider | None = "memory://",
        notify: Sequence[Mapping[str, Any]] = (),
        templates: Mapping[str, str] | None = None,
        actor: str | None = None,
        plugins: Sequence[Any] = (),
        max_parallel: int = 8,
        dry_run: bool = False,
        protection: Protection | str | None = None,
        approvers: Sequence[str] = (),
        env_params: Mapping[str, Any] | None = None,
        yes: bool = False,
        lock_timeout: float = 0.0,
        lease: float = 30.0,
        keep_lock_when_paused: bool = True,
        router: str | None = "memory://",
        clock: Clock | None = None,
        config: Any = None,
        seed: int | None = None,
        flush_deadline: float = 5.0,
        entry_points: bool = True,
    ) -> None:
        self.env = env
        self.params = dict(params or {})
        self.resources = dict(resources or {})
        self.actor = actor
        self.max_parallel = max_parallel
        self.dry_run = dry_run
        if isinstance(protection, str) or protection is None:
            protection = Protection.for_level(protection or "standard")
        self.protection = protection
        self.approvers = tuple(approvers)
        self.env_params = dict(env_params or {})
        self.yes = yes
        self.lock_timeout = lock_timeout
        self.lease = lease
        self.keep_lock_when_paused = keep_lock_when_paused
        self.router_url = router
        self.clock: Clock = self.resources.get("clock") or clock or SystemClock()
        self.config = config
        self.notify_rules = list(notify)
        self.templates = dict(templates or {})
        self.flush_deadline = flush_deadline
        self._rng = Random(seed)
        self.plugins = Plugins(plugins, entry_points=entry_points)
        if config is not None:
            configure(self.plugins, config)
        self._store_spec = store
        self._audit_spec = list(audit)
        self._locks_spec = locks
        self._store: RunStore | None = None
        self._sinks: list[AuditSink] | None = None
        self._locks: LockProvider | None = None

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        env: str | None = None,
        store: str | None = None,
        plugins: Sequence[Any] = (),
        lock_timeout: float | None = None,
        **kwargs: Any,
    ) -> Runner:
        """A runner configured by ``[tool.runbook]`` (what the CLI uses)."""
        env_cfg = config.env(env)
        return cls(
            env=env_cfg.name,
            protection=env_cfg.protection,
            approvers=env_cfg.approvers,
            env_params=env_cfg.params,
            store=store or config.store,
            audit=[{"url": s.url, "best_effort": s.best_effort} for s in config.audit],
            locks=config.lock,
            lock_timeout=config.lock_timeout if lock_timeout is None else lock_timeout,
            lease=config.lease,
            notify=config.notify,
            templates=config.templates,
            router=config.router,
            keep_lock_when_paused=config.keep_lock_when_paused,
            plugins=[*config.plugins, *plugins],
            config=config,
            **kwargs,
        )

    # -- providers, opened on first use --------------------------------------------------------

    @property
    def store(self) -> RunStore | None:
        if self._store is None and self._store_spec is not None:
            spec = self._store_spec
            self._store = self.plugins.open("store", spec) if isinstance(spec, str) else spec
        return self._store

    @property
    def sinks(self) -> list[AuditSink]:
        if self._sinks is None:
            sinks = []
            for spec in self._audit_spec:
                if isinstance(spec, str):
                    sinks.append(self.plugins.open("audit", self._in_store(spec)))
                elif isinstance(spec, Mapping):
                    options = {k: v for k, v in spec.items() if k != "url"}
                    sinks.append(self.plugins.open("audit", self._in_store(spec["url"]), **options))
                else:
                    sinks.append(spec)
            self._sinks = sinks
        return self._sinks

    def _in_store(self, url: str) -> str:
        """Bare ``sqlite://`` means "in the run store": the store's own SQLite file."""
        store = getattr(self._store_spec, "url", self._store_spec)
        if (
            url.partition("?")[0] == "sqlite://"
            and isinstance(store, str)
            and store.startswith("sqlite://")
        ):
            return store
        return url

    @property
    def lock_provider(self) -> LockProvider | None:
        if self._locks is None and self._locks_spec is not None:
            spec = self._locks_spec
            self._locks = self.plugins.open("lock", spec) if isinstance(spec, str) else spec
        return self._locks

    def _actor(self) -> str:
        if self.actor:
            return self.actor
        try:
            from runbook.config import resolve_actor
        except ImportError:  # pragma: no cover - config module always present in releases
            import getpass

            return getpass.getuser()
        root = getattr(self.config, "root", None)
        return resolve_actor(None, cwd=root)

    # -- running ---------------------------------------------------------------------------------

    def load(self, runbook: Runbook | str | Path) -> Runbook:
        if isinstance(runbook, Runbook):
            return runbook
        return load(runbook, extra_names=self.resources, plugins=self.plugins)

    def run(
        self, runbook: Runbook | str | Path, *, params: Mapping[str, Any] | None = None
    ) -> RunResult:
        return asyncio.run(self.arun(runbook, params=params))

    async def arun(
        self, runbook: Runbook | str | Path, *, params: Mapping[str, Any] | None = None
    ) -> RunResult:
        rb = self.load(runbook)
        self._check_protection(rb)
        resolved = resolve_params(
            rb.params, {**self.params, **(params or {})}, config_defaults=self.env_params
        )
        actor = self._actor()
        run_id = new_run_id(self.clock.now())
        record = None
        if not self.dry_run and self.store is not None:
            record = RunRecord(
                run_id=run_id,
                runbook_path=str(rb.path),
                runbook_sha256=rb.sha256,
                env=self.env,
                actor=actor,
                status=R.RUNNING,
                params=resolved.public(),
                created_at=self.clock.now(),
                host=HOST,
                pid=os.getpid(),
                options={"max_parallel": self.max_parallel},
            )
        return await self._execute(rb, run_id, resolved, actor, create=record)

    def run_many(
        self, items: Iterable[Runbook | str | Path | tuple[Any, Mapping[str, Any]]]
    ) -> list[RunResult]:
        """Several runs at once in one process (each ``(runbook, params)`` or a runbook)."""

        async def all_runs() -> list[RunResult]:
            calls = [
                self.arun(i[0], params=i[1]) if isinstance(i, tuple) else self.arun(i)
                for i in items
            ]
            return list(await asyncio.gather(*calls))

        return asyncio.run(all_runs())

    def _check_protection(self, rb: Runbook) -> None:
        if self.yes and not self.protection.allow_yes:
            raise UsageError(
                f"--yes is refused in env {self.env!r} (protection {self.protection.level})"
            )
        if self.protection.require_rollbacks:
            missing = [n for n, s in rb.steps.items() if s.options.reversible and not s.rollback]
            if missing:
                raise UsageError(
                    f"env {self.env!r} (protection {self.protection.level}) requires a rollback "
                    f"for every reversible step; missing for: {', '.join(missing)}"
                )

    async def _execute(
        self,
        rb: Runbook,
        run_id: str,
        params: Params,
        actor: str,
        *,
        resumed: bool = False,
        env: str | None = None,
        resumed_by: str | None = None,
        create: RunRecord | None = None,
        **extra: Any,
    ) -> RunResult:
        env = env or self.env
        protection, approvers = self._env_settings(env)
        info = RunInfo(
            run_id=run_id,
            runbook=str(rb.path),
            name=rb.name,
            sha256=rb.sha256,
            env=env,
            actor=actor,
            params=params.public(),
            dry_run=self.dry_run,
            resumed=resumed,
        )
        secret_values = [params[n] for n in params.secret_names]
        redactor = Redactor(secret_values)
        holder: dict[str, Execution] = {}
        for conf in rb.conftests:  # runbookconf.py files may implement hooks too
            self.plugins.add(conf)
        want = frozenset(h for h in _LIFECYCLE if self.plugins.has_impls(h))
        hook = self.plugins.hook
        listeners = []
        if "runbook_event" in want:
            listeners.append(lambda event: hook.runbook_event(run=info, event=event))
        # Channels are opened before the run is recorded, so a broken channel (unknown scheme,
        # missing secret) is a usage error that leaves no half-started run behind.
        notifier = self._notification_service(info, holder)
        if notifier is not None:
            listeners.append(lambda event: notifier.event(event, info))
        if create is not None and self.store is not None:
            self.store.create_run(create)
        recorder = Recorder(
            info,
            [] if self.dry_run else self.sinks,
            clock=self.clock,
            redactor=redactor,
            listeners=listeners,
        )

        def record(kind: str, step: str | None, data: dict[str, Any]) -> None:
            holder["x"].emit(kind, step, data)

        def progress(step: str | None, message: str, fraction: float | None) -> None:
            if "runbook_progress" in want:
                hook.runbook_progress(run=info, step=step, message=message, fraction=fraction)

        ctx = Ctx(info, params, record=record, progress=progress, redact=redactor)
        outputs: dict[str, Any] = {}
        factories: dict[str, Any] = {"router": self._router_factory}
        factories.update(self.plugins.resources())
        for res in rb.resources.values():
            factories[res.name] = res.func
        values: dict[str, Any] = {
            "ctx": ctx,
            "params": params,
            "env": env,
            "clock": self.clock,
            "notify": self._notify_resource(notifier, info),
        }
        values = {k: v for k, v in values.items() if k not in factories or k in ("ctx", "params")}
        values.update(self.resources)
        for name in values:
            factories.pop(name, None)
        scope = ResourceScope(factories, values)
        scope._values.setdefault("injector", Injector(outputs, scope, rb.aliases))
        locks = None
        if self.lock_provider is not None and not self.dry_run:
            locks = LockManager(
                self.lock_provider,
                clock=self.clock,
                owner=run_id,
                actor=actor,
                lease=self.lease,
                timeout=self.lock_timeout,
                rng=self._rng,
                on_lost=lambda name, exc: holder["x"].on_lease_lost(name, exc),
                on_wait=lambda name, lease, waited: holder["x"].on_lock_wait(name, lease, waited),
            )
        policy = ApprovalPolicy(
            run_id,
            extra.pop("run_actor", actor),
            protection,
            self.store,
            approvers,
            self.yes and not resumed,
        )
        setup = RunSetup(
            runbook=rb,
            info=info,
            scope=scope,
            recorder=recorder,
            clock=self.clock,
            hook=hook,
            hooks_wanted=want,
            store=self.store,
            locks=locks,
            approvals=policy,
            redactor=redactor,
            max_parallel=self.max_parallel,
            dry_run=self.dry_run,
            rng=self._rng,
            keep_lock_when_paused=self.keep_lock_when_paused,
            outputs=outputs,
            resumed_by=resumed_by,
            **extra,
        )
        execution = holder["x"] = Execution(setup)
        if notifier is not None:
            await notifier.start()
        try:
            return await execution.execute()
        finally:
            if notifier is not None:
                await notifier.flush(self.flush_deadline)
                await notifier.aclose()

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

    def close(self) -> None:
        """Close the providers this runner opened from URLs (connection pools, files)."""
        opened = []
        if isinstance(self._store_spec, str) and self._store is not None:
            opened.append(self._store)
        if isinstance(self._locks_spec, str) and self._locks is not None:
            opened.append(self._locks)
        if self._sinks is not None:
            opened += [
                s
                for s, spec in zip(self._sinks, self._audit_spec, strict=True)
                if not isinstance(spec, AuditSink)
            ]
        for provider in opened:
            close = getattr(provider, "close", None)
            if close is not None:
                close()
        self._store, self._locks, self._sinks = None, None, None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _router_factory(self) -> Any:
        if self.router_url is None:
            raise RunbookError('no router configured ([tool.runbook] router = "file://...")')
        return self.plugins.open("router", self.router_url)

    def _notification_service(self, info: RunInfo, holder: dict[str, Execution]) -> Any:
        if not self.notify_rules or self.dry_run:
            return None
        from runbook.notify.dispatch import NotificationService

        def failed(message: Any, url: str, error: str) -> None:
            execution = holder.get("x")
            if execution is not None:
                import contextlib

                from runbook.errors import AuditError

                with contextlib.suppress(AuditError):
                    execution.s.recorder.emit(
                        "notification_failed",
                        message.step,
                        {"channel": url, "error": error, "kind": message.kind},
                    )

        return NotificationService(
            self.plugins, self.notify_rules, templates=self.templates, on_failure=failed
        )

    def _notify_resource(self, service: Any, info: RunInfo) -> Any:
        from runbook.notify.base import Message

        def notify(title: str, text: str = "", severity: str = "info") -> None:
            """Send an ad-hoc message through the configured channels."""
            if service is not None:
                service.adhoc(
                    Message(title=title, text=text, severity=severity, kind="adhoc"), info
                )

        return notify

    # -- durable runs ----------------------------------------------------------------------------

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
        return rb

    def _params_for(self, rb: Runbook, record: RunRecord) -> Params:
        given = {
            k: v for k, v in record.params.items() if not (k in rb.params and rb.params[k].secret)
        }
        given = {k: v for k, v in given.items() if k in rb.params}
        given.update(self.params)
        return resolve_params(rb.params, given)

    def _resumable(self, run_id: str) -> RunRecord:
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
            raise UsageError(f"run {run_id} has ended ({record.status}); nothing to resume")
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
        rb = self.load(record.runbook_path)
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
        granted = {a.actor for a in store.approvals(run_id, name) if a.decision == "granted"}
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
        rb = self.load(record.runbook_path)
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
            record = self._resumable(run_id)
            rb = self.load(record.runbook_path)
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
