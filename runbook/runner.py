"""``Runner``: the public entry point that runs runbooks and continues stored runs.

It turns configuration into providers (store, audit sinks, locks, all opened by URL through
plugins: ``runbook.providers``) and env rules (``runbook.envs``), checks what must be checked
before anything runs (params, protection, lock names), and hands each run to
``runbook.assembly``, which builds it and drives it through the engine. The durable-run
operations (resume, approve, deny, cancel) are a ``DurableRuns`` service (runbook/durable.py)
the runner composes: it receives the runner's providers and env rules, and the runner's way to
load a runbook and assemble a run; ``Runner``'s methods delegate to it, or to the executor that
drives a run elsewhere. Longer than most modules for a reason: it is the documented facade, with
every option of the constructor and a docstring for each public method, all of them short.
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
from runbook.audit.events import AuditSink
from runbook.audit.pipeline import HOST
from runbook.audit.signing import load_signer
from runbook.clock import Clock, SystemClock
from runbook.collect import Runbook, bind_params, load
from runbook.durable import DurableRuns
from runbook.envs import Envs
from runbook.errors import RunbookError, UsageError
from runbook.executors import DEFAULT_EXECUTOR, Executor
from runbook.locks.base import LockProvider, expand_name
from runbook.params import Params, resolve_params
from runbook.plugins import Plugins, configure, shared
from runbook.protection import Protection
from runbook.providers import Providers
from runbook.result import RunResult
from runbook.store.base import RunRecord, RunStore
from runbook.trail import trail_option
from runbook.values import is_seconds


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and readable: ``20261123-181530-a3f9c2``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


_JITTER = Random()


class Runner:
    """Runs runbooks, and continues stored runs, with one set of providers and rules.

    What a run touches besides its steps is chosen here once: the run store (so another process
    can resume, approve or cancel the run), the audit sinks, the lock provider, the actor, the
    environment and how strict it is. The CLI builds one from configuration; tests and scripts
    build one directly, usually with fakes. Providers given as URLs are opened on first use, so
    building a Runner connects nowhere, and ``close()`` (or ``with Runner(...)``) closes them.
    """

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
        signers: str | Path | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        env_params: Mapping[str, Any] | None = None,
        yes: bool = False,
        lock_timeout: float = 0.0,
        lease: float = 30.0,
        keep_lock_when_paused: bool = True,
        paused_lease: float = 7 * 24 * 3600.0,
        router: str | None = "memory://",
        clock: Clock | None = None,
        config: Any = None,
        seed: int | None = None,
        flush_deadline: float = 5.0,
        entry_points: bool = True,
        inventory: Any = None,
        limit: str | Sequence[str] | None = None,
        audit_key: str | Path | None = None,
        metrics: str | None = None,
        executor: str | Executor | None = None,
        durability: str = "power",
    ) -> None:
        if durability not in ("power", "process"):
            raise UsageError(f"durability must be 'power' or 'process', got {durability!r}")
        _check_numbers(
            max_parallel=max_parallel,
            lock_timeout=lock_timeout,
            lease=lease,
            paused_lease=paused_lease,
            flush_deadline=flush_deadline,
        )
        if isinstance(audit, str | Mapping):  # one sink: not its URL's characters, one by one
            audit = (audit,)
        # "process": SQLite synchronous=NORMAL, JSONL without fsync (docs/durable-runs.md).
        self.durability = durability
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
        self.signers = Path(signers).expanduser().absolute() if signers else None
        self.groups = {k: tuple(v) for k, v in (groups or {}).items()}
        self.env_params = dict(env_params or {})
        self.yes = yes
        self.lock_timeout = lock_timeout
        self.lease = lease
        self.keep_lock_when_paused = keep_lock_when_paused
        self.paused_lease = paused_lease
        self.router_url = router
        self.clock: Clock = self.resources.get("clock") or clock or SystemClock()
        self.config = config
        self.notify_rules = list(notify)
        self.templates = dict(templates or {})
        self.flush_deadline = flush_deadline
        # Jitter for retries and lock waits. Without a seed, Runners share the process's
        # generator: seeding one from the OS is 14 us, half of what building a Runner costs.
        self.rng = _JITTER if seed is None else Random(seed)
        self.inventory = inventory  # path or runbook.inventory.Inventory (docs/fleets.md)
        self.limit = limit
        self.run_options: dict[str, Any] = {}  # kept in the stored run (``retry_of``...)
        # Without plugins of its own, a Runner uses the process's plugin manager (built once);
        # it gets one of its own when something is added to it (a runbookconf.py, metrics).
        manager = (
            Plugins(plugins, entry_points=entry_points)
            if plugins
            else shared(entry_points=entry_points)
        )
        if config is not None:
            configure(manager, config)
        if router is not None:  # opened when a step first asks for it: checked now, before a run
            manager.check("router", router)
        self._metrics = None
        if metrics:  # pushed when each run ends or pauses (docs/metrics.md)
            from runbook.metrics import open_metrics
            from runbook.metrics.reporter import MetricsReporter

            self._metrics = MetricsReporter(open_metrics(metrics))
            manager = manager.unshared()
            manager.add(self._metrics)
        self.providers = Providers(
            plugins=manager,
            clock=self.clock,
            store=store,
            audit=audit,
            locks=locks,
            # Loaded now, so a bad key (or no cryptography) is a usage error before any run.
            signer=load_signer(audit_key) if audit_key else None,
            durability=durability,
        )
        self.executor: str | Executor = executor or DEFAULT_EXECUTOR

    @property
    def plugins(self) -> Plugins:
        """The plugin manager: the process's shared one until something is added to this
        runner (a runbookconf.py with hooks, metrics), then the runner's own."""
        return self.providers.plugins

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
            signers=env_cfg.signers,
            groups=config.groups,
            env_params=env_cfg.params,
            store=store or config.store,
            audit=[{"url": s.url, "best_effort": s.best_effort} for s in config.audit],
            locks=config.lock,
            lock_timeout=config.lock_timeout if lock_timeout is None else lock_timeout,
            lease=config.lease,
            notify=config.notify,
            templates=config.templates,
            router=config.router,
            metrics=getattr(config, "metrics", None),
            keep_lock_when_paused=config.keep_lock_when_paused,
            paused_lease=config.paused_lease,
            audit_key=getattr(config, "audit_key", None),
            plugins=[*config.plugins, *plugins],
            config=config,
            executor=kwargs.pop("executor", None) or getattr(config, "executor", None),
            durability=kwargs.pop("durability", None) or getattr(config, "durability", "power"),
            **{"inventory": getattr(config, "inventory", None), **kwargs},
        )

    # -- providers, opened on first use (runbook.providers) ------------------------------------

    @property
    def store(self) -> RunStore | None:
        """The run store, opened from its URL on first use (None: runs are not kept)."""
        return self.providers.store

    @property
    def sinks(self) -> list[AuditSink]:
        """The audit sinks, each behind an ``AuditLog`` so the store witnesses every event (and
        an ``audit_key`` signs checkpoints): a trail cut short or edited is then detected."""
        return self.providers.sinks

    @property
    def lock_provider(self) -> LockProvider | None:
        """The lock provider, opened from its URL on first use (None: locks are not taken)."""
        return self.providers.lock_provider

    @property
    def envs(self) -> Envs:
        """This runner's env and its rules, and how to find those of a stored run's env."""
        return Envs(
            self.env, self.protection, self.approvers, self.signers, self.groups, self.config
        )

    @property
    def durable(self) -> DurableRuns:
        """The operations on stored runs (resume, approve, deny, cancel) with this runner's
        providers, env rules, loading and per-run setup.

        Made on each use: it holds the runner's callables, so the runner does not hold it (no
        reference cycle; a Runner is freed by reference counting).
        """
        return DurableRuns(
            self.providers,
            self.envs,
            params=self.params,
            lease=self.lease,
            dry_run=self.dry_run,
            actor=self.resolved_actor,
            load=self.load,
            execute=self._execute,
        )

    def resolved_actor(self) -> str:
        """Who acts: ``actor``, else ``RUNBOOK_ACTOR``, git's ``user.email``, the OS user. What
        a run records as its initiator, and a decision as its claimed actor."""
        if self.actor:
            return self.actor
        from runbook.config import resolve_actor  # only when no actor was given

        root = getattr(self.config, "root", None)
        return resolve_actor(None, cwd=root)

    # -- running ---------------------------------------------------------------------------------

    def load(self, runbook: Runbook | str | Path, *, fleet: Any = None) -> Runbook:
        """Collect a runbook for this runner's hosts (``fleet``: those of a stored run)."""
        if isinstance(runbook, Runbook):
            return runbook
        if fleet is None:
            from runbook.fleet import Fleet

            fleet = Fleet.open(self.inventory, self.limit)
        return load(runbook, extra_names=self.resources, plugins=self.plugins, fleet=fleet)

    def run(
        self, runbook: Runbook | str | Path, *, params: Mapping[str, Any] | None = None
    ) -> RunResult:
        """``arun`` for synchronous code (scripts, tests): it runs its own event loop, so call
        ``arun`` instead where a loop is already running."""
        return asyncio.run(self.arun(runbook, params=params))

    async def arun(
        self,
        runbook: Runbook | str | Path,
        *,
        params: Mapping[str, Any] | None = None,
        detach: bool = False,
    ) -> RunResult:
        """Run a runbook. ``detach``: with an executor that drives runs elsewhere (Temporal),
        return as soon as the run started (status ``running``) instead of following it."""
        rb = self.load(runbook)
        executor = self.open_executor(here=False)
        if getattr(executor, "runs_remotely", False):
            if not self.dry_run:  # the run is driven by its executor (a workflow), not here
                return await executor.arun(self, rb, params=dict(params or {}), detach=detach)
            executor = self.open_executor(DEFAULT_EXECUTOR)  # a dry run's probes run here
        self.check_protection(rb)
        resolved = resolve_params(
            rb.params, {**self.params, **(params or {})}, config_defaults=self.env_params
        )
        rb = bind_params(rb, resolved)  # strategy options given as param(...)
        self.check_locks(rb, resolved)
        actor = self.resolved_actor()
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
                options={
                    "max_parallel": self.max_parallel,
                    **(rb.fleet.options() if rb.fleet is not None else {}),
                    **self.run_options,
                    **trail_option(self.store, self.sinks),
                },
            )
        started = {k: v for k, v in self.run_options.items() if k == "retry_of"}
        return await self._execute(
            rb, run_id, resolved, actor, create=record, started=started, executor=executor
        )

    def _execute(self, *args: Any, **kwargs: Any) -> Any:
        """``runbook.assembly.execute`` for this runner, imported when a run is executed: the
        engine (and OpenTelemetry) is not loaded by what only reads runs (``runbook runs``,
        ``show``, ``approve``)."""
        from runbook.assembly import execute

        return execute(self, *args, **kwargs)

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

    def check_locks(self, rb: Runbook, params: Params) -> None:
        """Expand every lock template now: a typo is a usage error before anything runs (here,
        or where an executor that drives runs elsewhere starts one)."""
        templates = [("lock", rb.lock)] + [
            (f"step {n!r} lock", s.options.lock) for n, s in rb.steps.items()
        ]
        for where, template in templates:
            if template is None:
                continue
            try:
                expand_name(template, env=self.env, params=params)
            except UsageError as exc:
                raise UsageError(f"{rb.path}: {where} {exc}") from None

    def check_protection(self, rb: Runbook) -> None:
        """Refuse, before anything runs, what this env's protection forbids: ``--yes`` where it
        is refused, reversible steps without a rollback in an env that requires them."""
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

    def open_executor(self, url: str | Executor | None = None, *, here: bool = True) -> Any:
        """One executor per run (the local one owns the run's worker threads): each run opens
        its own (runbook.assembly), ``arun`` asks which kind the configured one is.

        An executor that drives whole runs elsewhere (``runs_remotely``, such as ``temporal://``)
        runs no attempt here: with ``here`` (a stored local run resumed, a dry run) the local
        executor is used instead.
        """
        url = self.executor if url is None else url
        if not isinstance(url, str):
            executor: Any = url
        else:
            executor = self.plugins.open(
                "executor", url, clock=self.clock, max_parallel=self.max_parallel
            )
        if here and getattr(executor, "runs_remotely", False):
            return self.open_executor(DEFAULT_EXECUTOR)
        return executor

    def remote_executor(self, url: str | Executor | None = None) -> Any:
        """The executor at ``url`` (default: the configured one) if it drives whole runs
        elsewhere (``runs_remotely``), else None."""
        url = self.executor if url is None else url
        if isinstance(url, str) and url.partition(":")[0] == "local":
            return None
        executor = self.open_executor(url, here=False)
        return executor if getattr(executor, "runs_remotely", False) else None

    def _remote_for(self, run_id: str) -> Any:
        """The executor driving a stored run elsewhere (its record names it), or None."""
        store = self.store
        if store is None:
            return None
        try:
            url = store.get_run(run_id).options.get("executor")
        except RunbookError:
            return None  # the durable operation reports a missing run itself
        return self.remote_executor(url) if isinstance(url, str) else None

    # -- stored runs: delegated to DurableRuns, or to the executor driving the run elsewhere ----

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
        """``aresume`` for synchronous code (it runs its own event loop)."""
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
        **decision: Any,
    ) -> RunResult:
        """Continue a paused or crashed run. ``actor`` is a claimed identity, ``sign`` a key: a
        ``signers`` env needs ``--retry/--skip-interrupted`` decisions signed. A run driven by
        a remote executor (Temporal) is resumed through it: its workflow, not this process,
        moves that run on."""
        if (remote := self._remote_for(run_id)) is not None:
            if retry_interrupted and skip_interrupted:
                raise UsageError("choose one of --retry-interrupted and --skip-interrupted")
            return await remote.aresume(
                self,
                run_id,
                retry_interrupted=retry_interrupted,
                skip_interrupted=skip_interrupted,
                **decision,
            )
        return await self.durable.aresume(
            run_id,
            retry_interrupted=retry_interrupted,
            skip_interrupted=skip_interrupted,
            force=force,
            **decision,
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
        """Approve a gate of a stored run (the rules of the gate and the env apply); say what the
        gate still waits for (``resume`` continues the run). ``actor`` is the claimed identity;
        in a ``signers`` env the decision is signed with ``sign`` (or ``RUNBOOK_SIGNING_KEY``)
        and the actor is the principal it verifies as. For a run driven by a remote executor
        the decision is sent to its workflow, which holds the gate."""
        if (remote := self._remote_for(run_id)) is not None:
            return remote.approve(self, run_id, step=step, actor=actor, comment=comment, sign=sign)
        return self.durable.approve(run_id, step=step, actor=actor, comment=comment, sign=sign)

    def deny(
        self, run_id: str, *, actor: str | None = None, reason: str, sign: str | None = None
    ) -> RunResult:
        """``adeny`` for synchronous code (it runs its own event loop)."""
        return asyncio.run(self.adeny(run_id, actor=actor, reason=reason, sign=sign))

    async def adeny(
        self, run_id: str, *, actor: str | None = None, reason: str, sign: str | None = None
    ) -> RunResult:
        """Deny a paused run's gate(s): what completed is rolled back. ``actor`` is the claimed
        identity (see ``approve``). A remote executor's run is denied through its workflow."""
        if (remote := self._remote_for(run_id)) is not None:
            return await remote.adeny(self, run_id, actor=actor, reason=reason, sign=sign)
        return await self.durable.adeny(run_id, actor=actor, reason=reason, sign=sign)

    def cancel(
        self, run_id: str, *, actor: str | None = None, sign: str | None = None
    ) -> RunResult:
        """``acancel`` for synchronous code (it runs its own event loop)."""
        return asyncio.run(self.acancel(run_id, actor=actor, sign=sign))

    async def acancel(
        self, run_id: str, *, actor: str | None = None, sign: str | None = None
    ) -> RunResult:
        """Cancel a paused or dead run, rolling back what completed; strict envs allow it to its
        initiator and approvers. A remote executor's run is cancelled through its workflow."""
        if (remote := self._remote_for(run_id)) is not None:
            return await remote.acancel(self, run_id, actor=actor, sign=sign)
        return await self.durable.acancel(run_id, actor=actor, sign=sign)

    def close(self) -> None:
        """Close the providers this runner opened from URLs (connection pools, files)."""
        self.providers.close(also=[self._metrics] if self._metrics is not None else [])

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_router(self) -> Any:
        """The traffic router at ``router_url``: the ``router`` resource of a run, opened when
        a step asks for it (here, or in a worker of an executor that drives runs elsewhere)."""
        if self.router_url is None:
            raise RunbookError('no router configured ([tool.runbook] router = "file://...")')
        return self.plugins.open("router", self.router_url)


def _check_numbers(
    *, max_parallel: Any, lock_timeout: Any, lease: Any, paused_lease: Any, flush_deadline: Any
) -> None:
    """The numeric settings, refused by name before anything opens (the configuration file's
    are checked as they are read, runbook.config; these are the Python API's)."""
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise UsageError(f"Runner(max_parallel=...) must be an integer >= 1, got {max_parallel!r}")
    for name, value, positive in (
        ("lock_timeout", lock_timeout, False),
        ("lease", lease, True),
        ("paused_lease", paused_lease, True),
        ("flush_deadline", flush_deadline, False),
    ):
        if not is_seconds(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise UsageError(f"Runner({name}=...) must be seconds {bound}, got {value!r}")
