"""A worker's side of a run: the runbook loaded from its own checkout, and the run's context.

A worker serves many runs. It opens the project's configured providers once (run store, audit
sinks, locks: PostgreSQL and Redis when several machines share them) through a ``Runner``, loads
each runbook once per content hash, and for every activity rebuilds what a step of that run sees:
its params, its recorder, its resources. A checkout whose runbook differs from the one the run
started with is refused: a worker never runs other code than was started (and approved).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook.audit.pipeline import Recorder
from runbook.clock import Clock, SystemClock, clip_to_deadline
from runbook.collect import Runbook, bind_params
from runbook.context import Ctx, RunInfo
from runbook.errors import UsageError
from runbook.params import Params, resolve_params
from runbook.recorder import RunRecorder
from runbook.redact import Redactor
from runbook.scope import Injector, ResourceScope
from runbook_temporal.messages import RunRef

# The lifecycle hooks a worker calls for the attempts it runs (the run-level ones are the
# follower's: ``exec`` reports the run).
_HOOKS = ("runbook_step_started", "runbook_step_finished", "runbook_rollback_finished")


_RUNS_KEPT = 256  # runs whose params a worker keeps resolved (oldest dropped first)


class Refused(Exception):
    """This worker cannot serve the run (runbook missing or changed): never retried blindly."""


class BankedClock:
    """The system clock, except that the first ``banked`` seconds of sleeps are already served.

    A declared wait (a bake) is a durable timer in the workflow; when its time is up the step's
    function runs, and its own ``clock.sleep`` calls return at once until the banked time is used.
    """

    def __init__(self, banked: float = 0.0, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._banked = banked
        self._lock = threading.Lock()

    def _take(self, seconds: float) -> float:
        with self._lock:
            served = min(self._banked, max(0.0, seconds))
            self._banked -= served
            return seconds - served

    def now(self) -> Any:
        return self._clock.now()

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def sleep(self, seconds: float) -> None:
        seconds, timeout = clip_to_deadline(self, self._take(seconds))
        if seconds > 0:
            self._clock.sleep(seconds)
        if timeout:
            raise timeout

    async def asleep(self, seconds: float) -> None:
        seconds, timeout = clip_to_deadline(self, self._take(seconds))
        if seconds > 0:
            await asyncio.sleep(seconds)
        if timeout:
            raise timeout


@dataclass
class RunContext:
    """What one activity of one run needs; built per activity, closed after it."""

    ref: RunRef
    runbook: Runbook
    params: Params
    info: RunInfo
    recorder: RunRecorder
    scope: ResourceScope
    redactor: Redactor
    seqs: dict[str, int]
    closed: bool = False

    def close(self) -> list[str]:
        """Tear the attempt's resources down (once)."""
        if self.closed:
            return []
        self.closed = True
        return self.scope.close()


class WorkerRuns:
    """The runs a worker process serves, over the providers of one ``Runner``."""

    def __init__(self, runner: Any, root: Path, notifier: Any = None) -> None:
        self.runner = runner
        self.root = root
        # One notification service for the worker (configured ``notify`` rules), bound to the
        # worker's loop: the events of every attempt it runs are routed through it.
        self.notifier = notifier
        self._runbooks: dict[tuple[str, str], Runbook] = {}
        self._runs: dict[str, tuple[Runbook, Params, RunInfo, Redactor]] = {}
        self._lock = threading.Lock()

    def path(self, ref: RunRef) -> Path:
        path = Path(ref.runbook)
        return path if path.is_absolute() else self.root / path

    def runbook(self, ref: RunRef) -> Runbook:
        key = (ref.runbook, ref.sha256)
        with self._lock:
            cached = self._runbooks.get(key)
        if cached is not None:
            return cached
        path = self.path(ref)
        if not path.is_file():
            raise Refused(f"run {ref.run_id}: runbook {path} does not exist on this worker")
        rb = self.runner.load(path)
        if rb.sha256 != ref.sha256:
            raise Refused(
                f"run {ref.run_id}: {path} on this worker differs from the runbook the run "
                "started with; deploy the same checkout to every worker"
            )
        with self._lock:
            self._runbooks[key] = rb
        return rb

    def params(self, rb: Runbook, ref: RunRef) -> Params:
        """The run's public params; secrets come from this worker's environment (``env=``)."""
        given = {k: v for k, v in ref.params.items() if k in rb.params and not rb.params[k].secret}
        defaults = {}
        config = getattr(self.runner, "config", None)
        if config is not None:
            defaults = config.env(ref.env).params
        try:
            return resolve_params(rb.params, given, config_defaults=defaults)
        except UsageError as exc:
            raise Refused(f"run {ref.run_id}: {exc}") from None

    def _identity(self, rb: Runbook, ref: RunRef) -> tuple[Runbook, Params, RunInfo, Redactor]:
        """A run's runbook (strategy groups expanded with its params), params, info and
        redactor: the same for all its activities on this worker."""
        with self._lock:
            cached = self._runs.get(ref.run_id)
        if cached is not None:
            return cached
        params = self.params(rb, ref)
        rb = bind_params(rb, params)
        info = RunInfo(
            run_id=ref.run_id,
            runbook=str(self.path(ref)),
            name=rb.name,
            sha256=rb.sha256,
            env=ref.env,
            actor=ref.actor,
            params=params.public(),
        )
        made = (rb, params, info, Redactor([params[n] for n in params.secret_names]))
        with self._lock:
            if len(self._runs) >= _RUNS_KEPT:
                self._runs.pop(next(iter(self._runs)))
            self._runs[ref.run_id] = made
        return made

    def _notify(self, info: RunInfo) -> Callable[..., None]:
        notifier = self.notifier

        def notify(title: str, text: str = "", severity: str = "info") -> None:
            """Send an ad-hoc message through the configured channels."""
            if notifier is not None:
                from runbook.notify.base import Message

                notifier.adhoc(
                    Message(title=title, text=text, severity=severity, kind="adhoc"), info
                )

        return notify

    def context(
        self,
        ref: RunRef,
        *,
        outputs: dict[str, Any] | None = None,
        clock: Clock | None = None,
        progress: Callable[[str | None, str, float | None], None] | None = None,
    ) -> RunContext:
        rb, params, info, redactor = self._identity(self.runbook(ref), ref)
        plugins = self.runner.plugins
        listeners = []
        if plugins.has_impls("runbook_event"):
            listeners.append(lambda event: plugins.hook.runbook_event(run=info, event=event))
        notifier = self.notifier
        if notifier is not None:
            listeners.append(lambda event: notifier.event(event, info))
        run_clock: Clock = clock or self.runner.clock
        audit = Recorder(
            info, self.runner.sinks, clock=run_clock, redactor=redactor, listeners=listeners
        )
        seqs: dict[str, int] = {}  # finish numbers the workflow's coordinator gave
        recorder = RunRecorder(
            audit,
            self.runner.store,
            hook=plugins.hook,
            hooks_wanted=frozenset(h for h in _HOOKS if plugins.has_impls(h)),
            redactor=redactor,
            seq_of=seqs.get,
        )

        def record(kind: str, step: str | None, data: dict[str, Any]) -> None:
            recorder.emit(kind, step, data)

        def report(step: str | None, message: str, fraction: float | None) -> None:
            if progress is not None:
                progress(step, message, fraction)
            if plugins.has_impls("runbook_progress"):
                plugins.hook.runbook_progress(
                    run=info, step=step, message=message, fraction=fraction
                )

        ctx = Ctx(info, params, record=record, progress=report, redact=redactor)
        outputs = dict(outputs or {})
        factories: dict[str, Any] = {"router": self.runner.open_router}
        factories.update(plugins.resources())
        for res in rb.resources.values():
            factories[res.name] = res.func
        values: dict[str, Any] = {
            "ctx": ctx,
            "params": params,
            "env": ref.env,
            "clock": run_clock,
            "notify": self._notify(info),
        }
        values = {k: v for k, v in values.items() if k not in factories or k in ("ctx", "params")}
        values.update(self.runner.resources)
        for name in values:
            factories.pop(name, None)
        scope = ResourceScope(factories, values)
        scope._values.setdefault("injector", Injector(outputs, scope, rb.aliases))
        return RunContext(ref, rb, params, info, recorder, scope, redactor, seqs)
