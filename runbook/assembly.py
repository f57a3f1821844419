"""One run assembled from a ``Runner`` and driven through the engine to its end.

What a run is made of besides its steps is built here, per run, from the runner's providers and
rules: the ``RunInfo``, the audit ``Recorder``, the notification service, the resource scope the
steps are injected from, the lock manager, the approval policy; then the ``RunSetup`` the engine's
``Execution`` runs, and, once it ended, the run's objects cut free of each other so reference
counting frees them. A new run (``Runner.arun``) and a stored one continued (``DurableRuns``:
resume, deny, cancel, an expired gate) are assembled by the same :func:`execute`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.approval_policy import ApprovalPolicy
from runbook.approvals import gate_problems
from runbook.audit.pipeline import Recorder
from runbook.collect import Runbook
from runbook.context import Ctx, RunInfo
from runbook.engine import Execution, RunSetup
from runbook.errors import ConfigError, RunbookError
from runbook.executors import Executor
from runbook.locks.manager import LockManager
from runbook.params import Params
from runbook.plugins import implements_hooks
from runbook.redact import Redactor
from runbook.result import RunResult
from runbook.scope import Injector, ResourceScope, bound_to_run
from runbook.store.base import RunRecord

if TYPE_CHECKING:
    from runbook.runner import Runner

_LIFECYCLE = (
    "runbook_run_started",
    "runbook_step_started",
    "runbook_step_finished",
    "runbook_rollback_finished",
    "runbook_run_finished",
    "runbook_event",
    "runbook_progress",
)


def _running(holder: dict[str, Execution]) -> Execution:
    """The run's execution, for the lock manager's callbacks (it is closed before the run ends:
    a callback after that is a bug, said as such)."""
    execution = holder.get("x")
    if execution is None:
        raise RunbookError("a lock callback came after its run was over")
    return execution


async def execute(
    runner: Runner,
    rb: Runbook,
    run_id: str,
    params: Params,
    actor: str,
    *,
    resumed: bool = False,
    env: str | None = None,
    resumed_by: str | None = None,
    create: RunRecord | None = None,
    executor: Executor | None = None,
    **extra: Any,
) -> RunResult:
    """Assemble run ``run_id`` of ``rb`` with ``runner``'s providers and drive it to its end.

    ``create``: the run's record, stored once everything that can be refused before a run
    exists was opened (notification channels, the executor). ``env``, ``resumed``,
    ``resumed_by`` and ``extra`` (``prior``, ``decisions``...: ``RunSetup`` fields) are how a
    stored run is continued in its own env with what it already did.
    """
    env = env or runner.env
    rules = runner.envs.rules(env)
    protection, approvers = rules.protection, rules.approvers
    undefined = gate_problems(rb.steps, approvers, rules.groups)
    if undefined:  # before anything is stored: no step runs up to a gate nobody can open
        raise ConfigError(undefined)
    info = RunInfo(
        run_id=run_id,
        runbook=str(rb.path),
        name=rb.name,
        sha256=rb.sha256,
        env=env,
        actor=actor,
        params=params.public(),
        dry_run=runner.dry_run,
        resumed=resumed,
        identity=(
            "signed" if rules.signers else ("claimed" if protection.level == "strict" else "")
        ),
    )
    secret_values = [params[n] for n in params.secret_names]
    redactor = Redactor(secret_values)
    holder: dict[str, Execution] = {}
    for conf in rb.conftests:  # runbookconf.py files may implement hooks too
        if implements_hooks(conf):  # one with resources only keeps the shared manager
            runner.providers.add_plugin(conf)
    want = frozenset(h for h in _LIFECYCLE if runner.plugins.has_impls(h))
    hook = runner.plugins.hook
    listeners = []
    if "runbook_event" in want:
        listeners.append(lambda event: hook.runbook_event(run=info, event=event))
    # Channels are opened before the run is recorded, so a broken channel (unknown scheme,
    # missing secret) is a usage error that leaves no half-started run behind.
    notifier = _notification_service(runner, holder)
    if notifier is not None:
        listeners.append(lambda event: notifier.event(event, info))
    # Opened now: a bad executor URL leaves no half-started run.
    run_executor: Executor = runner.open_executor() if executor is None else executor
    if create is not None and runner.store is not None:
        runner.store.create_run(create)
        # What the run's later option changes (a rollback begun, its trail) keep: the options
        # it was created with (its hosts, max_parallel, retry_of), not an empty table.
        extra.setdefault("run_options", dict(create.options))
    recorder = Recorder(
        info,
        [] if runner.dry_run else runner.sinks,
        clock=runner.clock,
        redactor=redactor,
        listeners=listeners,
    )

    def record(kind: str, step: str | None, data: dict[str, Any]) -> None:
        execution = holder.get("x")
        if execution is None:  # a worker thread the run left behind (a timed-out step)
            raise RunbookError(f"run {run_id} is over: {kind} is not recorded")
        execution.emit(kind, step, data)

    def progress(step: str | None, message: str, fraction: float | None) -> None:
        if "runbook_progress" in want:
            hook.runbook_progress(run=info, step=step, message=message, fraction=fraction)

    outputs: dict[str, Any] = {}
    ctx = Ctx(
        info,
        params,
        record=record,
        progress=progress,
        redact=redactor,
        outputs=outputs,
        protection=protection.level,
        config=runner.config,
    )
    factories: dict[str, Any] = {"router": runner.open_router}
    factories.update(runner.plugins.resources())
    for res in rb.resources.values():
        factories[res.name] = res.func
    values: dict[str, Any] = {
        "ctx": ctx,
        "params": params,
        "env": env,
        "clock": runner.clock,
        "notify": _notify_resource(notifier, info, redactor),
        "hosts": rb.fleet,
    }
    values = {k: v for k, v in values.items() if k not in factories or k in ("ctx", "params")}
    values.update({k: bound_to_run(v, ctx) for k, v in runner.resources.items()})
    for name in values:
        factories.pop(name, None)
    scope = ResourceScope(factories, values)
    scope._values.setdefault("injector", Injector(outputs, scope, rb.aliases))
    locks = None
    if runner.lock_provider is not None and not runner.dry_run:
        locks = LockManager(
            runner.lock_provider,
            clock=runner.clock,
            owner=run_id,
            actor=actor,
            lease=runner.lease,
            timeout=runner.lock_timeout,
            rng=runner.rng,
            on_lost=lambda name, exc: _running(holder).on_lease_lost(name, exc),
            on_wait=lambda name, lease, waited: _running(holder).on_lock_wait(name, lease, waited),
            holder_status=runner.providers.run_status,
        )
    policy = ApprovalPolicy(
        run_id,
        extra.pop("run_actor", actor),
        protection,
        runner.store,
        approvers,
        runner.yes and not resumed,
        groups=runner.groups,
        signers=rules.signers,
        runbook=rb,
        env=env,
        params=params,
        mask=redactor,
    )
    setup = RunSetup(
        runbook=rb,
        info=info,
        scope=scope,
        recorder=recorder,
        clock=runner.clock,
        hook=hook,
        hooks_wanted=want,
        store=runner.store,
        locks=locks,
        approvals=policy,
        redactor=redactor,
        max_parallel=runner.max_parallel,
        dry_run=runner.dry_run,
        rng=runner.rng,
        keep_lock_when_paused=runner.keep_lock_when_paused,
        paused_lease=runner.paused_lease,
        outputs=outputs,
        resumed_by=resumed_by,
        executor=run_executor,
        starts=runner.providers.start_group(),
        **extra,
    )
    execution = holder["x"] = Execution(setup)
    if notifier is not None:
        await notifier.start()
    try:
        return await execution.execute()
    finally:
        if notifier is not None:
            await notifier.flush(runner.flush_deadline)
            await notifier.aclose()
        # The run's objects refer to each other (ctx -> record -> the execution -> its
        # scope -> ctx; the recorder -> the execution's _fatal). Cut where they close, so
        # reference counting frees a finished run at once instead of the cyclic collector
        # (tests/core/test_run_garbage.py).
        holder.clear()
        execution.release()
        scope.release()


def _notification_service(runner: Runner, holder: dict[str, Execution]) -> Any:
    if not runner.notify_rules or runner.dry_run:
        return None
    from runbook.notify.dispatch import NotificationService

    def failed(message: Any, url: str, error: str) -> None:
        # Nothing is submitted before the execution exists, but a message sent once the run
        # is over (its notify resource kept, a worker thread left behind) is refused by the
        # closed service with no run left to record it in: the log has it.
        execution = holder.get("x")
        if execution is None:
            return
        import contextlib

        from runbook.errors import AuditError

        with contextlib.suppress(AuditError):
            execution.s.recorder.emit(
                "notification_failed",
                message.step,
                {"channel": url, "error": error, "kind": message.kind},
            )

    return NotificationService(
        runner.plugins, runner.notify_rules, templates=runner.templates, on_failure=failed
    )


def _notify_resource(service: Any, info: RunInfo, redact: Redactor) -> Any:
    from runbook.notify.base import Message

    def notify(title: str, text: str = "", severity: str = "info") -> None:
        """Send an ad-hoc message through the configured channels (secrets masked)."""
        if service is not None:
            title_, text_ = redact(str(title)), redact(str(text))
            message = Message(title=title_, text=text_, severity=severity, kind="adhoc")
            service.adhoc(message, info)

    return notify
