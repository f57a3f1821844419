"""``rolling``: deploy a fleet batch by batch, per-host steps, a failure budget, newest-first undo.

``rolling(hosts="group:web", batch=2, max_failures=1, deploy=..., health=..., rollback=...)``
over web-1..web-4 becomes, per batch, one step per host and phase and one budget check::

    deploy[web-1]  deploy[web-2]        (concurrent within the batch)
    health[web-1]  health[web-2]        (each after its own deploy)
    batch-1                             (the budget: stop here if too many hosts failed)
    deploy[web-3] ... batch-2

A host whose deploy or health check fails is recorded (``host_failed`` in the audit, ``failed``
or ``unreached`` in ``RunResult.hosts``) and, while the failures stay within ``max_failures``
(whole rollout) and ``max_failures_per_batch``, the rollout goes on: per-host steps are
``required=False``. When a batch ends past the budget its ``batch-N`` step fails, nothing more is
deployed, and the engine rolls back every host whose deploy succeeded, newest batch first. A
host that failed keeps its state for a human (or ``runbook retry``), since it may be unreachable
and an undo that cannot reach it would only turn a failed rollout into a failed rollback.

The hosts are resolved when the runbook is collected (the steps must exist for ``list`` and
``graph``): a list of names or ``Host`` objects, or a selection such as ``"group:web"`` against
the run's inventory, narrowed by ``--limit``. See docs/fleets.md.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from runbook.errors import HostUnreachable, InventoryError, StepFailed, StepTimeout
from runbook.fleet import Fleet
from runbook.groups import GroupStep, StepGroup
from runbook.inventory import Host
from runbook.probes import await_until
from runbook.strategies.base import Definition, as_after, label, named

_EXTRA = ("service", "host", "batch")


def _hosts_spec(where: Definition, hosts: Any) -> str | tuple[str | Host, ...]:
    if isinstance(hosts, str):
        if not hosts.strip():
            raise where.error("hosts must be a selection such as 'group:web' or a list of names")
        return hosts
    if isinstance(hosts, bytes) or not isinstance(hosts, Sequence) or not hosts:
        raise where.error(f"hosts must be 'group:NAME' or a non-empty list, got {hosts!r}")
    items = tuple(h if isinstance(h, Host) else where.name(h, "each host") for h in hosts)
    names = [h.name if isinstance(h, Host) else h for h in items]
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise where.error(f"hosts appear more than once: {dupes}")
    return items


def _amount(where: Definition, value: Any, what: str, *, minimum: int) -> int | str:
    """An integer >= minimum, or a percentage string such as ``"25%"``."""
    if isinstance(value, str):
        text = value.strip()
        try:
            pct = float(text[:-1]) if text.endswith("%") else math.nan
        except ValueError:
            pct = math.nan
        if not (0 <= pct <= 100):
            raise where.error(
                f"{what}= must be an integer or a percentage like '25%', got {value!r}"
            )
        return text
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.error(f"{what}= must be an integer >= {minimum} or a percentage, got {value!r}")
    return value


def _resolve(amount: int | str, total: int, *, round_up: bool) -> int:
    if isinstance(amount, int):
        return amount
    share = total * float(amount[:-1]) / 100
    return math.ceil(share - 1e-9) if round_up else math.floor(share + 1e-9)


def rolling(
    hosts: str | Sequence[str | Host],
    *,
    deploy: Callable[..., Any],
    batch: int | str = 1,
    health: Callable[..., Any] | None = None,
    rollback: Callable[..., Any] | None = None,
    max_failures: int | str = 0,
    max_failures_per_batch: int | str | None = None,
    health_timeout: float = 300.0,
    health_backoff: float = 2.0,
    service: str | None = None,
    after: Any = (),
    when: Callable[..., Any] | None = None,
) -> StepGroup:
    """Rolling release over ``hosts`` in batches of ``batch`` hosts (or ``"25%"`` of them).

    Callbacks are injected like steps, plus ``host`` (a ``Host``), ``batch`` (1-based) and
    ``service``. ``health`` is polled per host until truthy, for at most ``health_timeout``
    seconds; ``rollback`` restores one host. ``max_failures`` (``0``, ``2``, ``"10%"``) is how many
    hosts may fail in the whole rollout, ``max_failures_per_batch`` in any one batch; one more
    stops the rollout and rolls back. ``after`` orders the group after other steps; ``when``
    runs or skips the whole group.
    """
    where = Definition("rolling")
    where.condition(when)
    spec = _hosts_spec(where, hosts)
    plan = _Plan(
        where=where,
        spec=spec,
        batch=_amount(where, batch, "batch", minimum=1),
        max_failures=_amount(where, max_failures, "max_failures", minimum=0),
        per_batch=None
        if max_failures_per_batch is None
        else _amount(where, max_failures_per_batch, "max_failures_per_batch", minimum=0),
        deploy=where.callback(deploy, "deploy", required=True),
        health=where.callback(health, "health", required=False),
        undo=where.callback(rollback, "rollback", required=False),
        timeout=where.seconds(health_timeout, "health_timeout", positive=True),
        backoff=where.seconds(health_backoff, "health_backoff", positive=True),
        service=None if service is None else where.name(service, "service"),
    )
    # A literal list is expanded now too, so the group can be inspected before collection;
    # collection expands it again against the run's fleet (inventory addresses, --limit).
    literal = () if isinstance(spec, str) else plan._steps(Fleet().select(spec))
    return StepGroup(
        strategy="rolling",
        service=plan.service or "",
        steps=literal,
        after=as_after(after),
        file=where.file,
        line=where.line,
        expand=plan.expand,
    )


class _Plan:
    """Everything one rollout's steps share (read-only), and the expansion against a fleet."""

    def __init__(self, *, where: Definition, spec: Any, batch: int | str, max_failures: int | str,
                 per_batch: int | str | None, deploy: Any, health: Any, undo: Any,
                 timeout: float, backoff: float, service: str | None) -> None:  # fmt: skip
        self.where, self.spec, self.batch = where, spec, batch
        self.max_failures, self.per_batch = max_failures, per_batch
        self.deploy, self.health, self.undo = deploy, health, undo
        self.timeout, self.backoff, self.service = timeout, backoff, service
        self.uses = tuple(f for f in (deploy, health, undo) if f is not None)

    def expand(self, fleet: Any) -> StepGroup:
        try:
            hosts = fleet.select(self.spec)
        except InventoryError as exc:
            raise self.where.error(str(exc)) from None
        group = StepGroup(
            strategy="rolling",
            service=self.service or "",
            steps=self._steps(hosts),
            after=(),
            file=self.where.file,
            line=self.where.line,
        )
        return group

    def _steps(self, hosts: list[Host]) -> tuple[GroupStep, ...]:
        if not hosts:  # --limit left none of this rollout's hosts: the group is skipped
            return (
                GroupStep(
                    "no-hosts",
                    named(_nothing, "no-hosts", "No host of this rollout is in the --limit."),
                    replace(self.where.options(), when=_never),
                ),
            )
        size = max(1, _resolve(self.batch, len(hosts), round_up=True))
        budget = _resolve(self.max_failures, len(hosts), round_up=False)
        per_batch = None
        if self.per_batch is not None:
            per_batch = _resolve(self.per_batch, min(size, len(hosts)), round_up=False)
        steps: list[GroupStep] = []
        previous: str | None = None
        for number, start in enumerate(range(0, len(hosts), size), start=1):
            members = hosts[start : start + size]
            finals = []
            for host in members:
                deploy_name = f"deploy[{host.name}]"
                steps.append(
                    GroupStep(
                        deploy_name,
                        self._deploy_step(host, number),
                        self._options(reversible=self.undo is not None),
                        rollback=self._undo_step(host, number) if self.undo else None,
                        after=(previous,) if previous else (),
                        uses=self.uses,
                        extra=_EXTRA,
                    )
                )
                finals.append(deploy_name)
            if self.health is not None:
                finals = []
                for host in members:
                    name = f"health[{host.name}]"
                    steps.append(
                        GroupStep(
                            name,
                            self._health_step(host, number),
                            self._options(),
                            uses=self.uses,
                            extra=_EXTRA,
                            inputs=(("deployed", f"deploy[{host.name}]"),),
                        )
                    )
                    finals.append(name)
            check = f"batch-{number}"
            steps.append(
                GroupStep(
                    check,
                    self._budget_step(number, members, budget, per_batch, previous is not None),
                    self.where.options(),
                    inputs=(
                        *((("prior", previous),) if previous else ()),
                        *((f"host_{i}", final) for i, final in enumerate(finals)),
                    ),
                )
            )
            previous = check
        return tuple(steps)

    def _options(self, **kwargs: Any) -> Any:
        # A host's failure must not fail the run by itself: the batch step decides (the budget).
        return self.where.options(required=False, **kwargs)

    def _extra(self, host: Host, number: int) -> dict[str, Any]:
        return {"service": self.service, "host": host, "batch": number}

    def _deploy_step(self, host: Host, number: int) -> Callable[..., Any]:
        fn = self.deploy

        async def deploy_host(injector: Any, ctx: Any) -> dict[str, Any]:
            await _on_host(
                ctx, host, "deploy", number, injector.acall(fn, **self._extra(host, number))
            )
            return {"host": host.name, "batch": number}

        return named(deploy_host, f"deploy[{host.name}]", f"Deploy {host.name} ({label(fn)}).")

    def _health_step(self, host: Host, number: int) -> Callable[..., Any]:
        fn = self.health

        async def health_host(deployed: Any, injector: Any, clock: Any, ctx: Any) -> dict[str, Any]:
            wait = await_until(
                lambda: injector.acall(fn, **self._extra(host, number)),
                self.timeout,
                self.backoff,
                clock=clock,
                progress=ctx.progress,
                message=f"{label(fn)}: {host.name} healthy",
            )
            await _on_host(ctx, host, "health", number, wait)
            return {"host": host.name, "batch": number, "healthy": True}

        return named(health_host, f"health[{host.name}]", f"Wait until {host.name} is healthy.")

    def _undo_step(self, host: Host, number: int) -> Callable[..., Any]:
        fn = self.undo

        async def undo_host(injector: Any) -> None:
            await injector.acall(fn, **self._extra(host, number))

        return named(undo_host, f"undo[{host.name}]", f"Roll back {host.name}.")

    def _budget_step(
        self, number: int, members: list[Host], budget: int, per_batch: int | None, chained: bool
    ) -> Callable[..., Any]:
        names = [h.name for h in members]

        async def check(**given: Any) -> dict[str, Any]:
            prior = given.get("prior") or {}
            failed = [n for i, n in enumerate(names) if given.get(f"host_{i}") is None]
            total = [*prior.get("failed_total", []), *failed]
            output = {"batch": number, "hosts": names, "failed": failed, "failed_total": total}
            problems = []
            if per_batch is not None and len(failed) > per_batch:
                problems.append(f"{len(failed)} in this batch, max_failures_per_batch={per_batch}")
            if len(total) > budget:
                problems.append(f"{len(total)} in the rollout, max_failures={budget}")
            if problems:
                raise StepFailed(
                    f"failure budget exceeded after batch {number}: {'; '.join(problems)} "
                    f"(failed: {', '.join(total)}); stopping and rolling back deployed hosts"
                )
            return output

        params = [inspect.Parameter("prior", inspect.Parameter.KEYWORD_ONLY)] if chained else []
        params += [
            inspect.Parameter(f"host_{i}", inspect.Parameter.KEYWORD_ONLY, default=None)
            for i in range(len(names))
        ]
        check.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return named(
            check,
            f"batch-{number}",
            f"Check the failure budget after {', '.join(names)} (at most {budget} failed).",
        )


async def _on_host(ctx: Any, host: Host, phase: str, number: int, awaitable: Any) -> None:
    """Await a host's callback; on failure record ``host_failed`` and fail the step.

    An unreachable host keeps its ``HostUnreachable`` (so it is reported ``unreached``); any other
    error becomes a ``StepFailed`` that names the phase and the host.
    """

    def failed(error: str, *, unreached: bool) -> None:
        ctx.audit(
            "host_failed",
            {
                "host": host.name,
                "address": host.address,
                "reason": "unreached" if unreached else "failed",
                "phase": phase,
                "batch": number,
                "error": error,
            },
        )

    try:
        await awaitable
    except HostUnreachable as exc:
        failed(str(exc), unreached=True)
        raise
    except (StepTimeout, StepFailed) as exc:
        failed(str(exc), unreached=False)
        raise
    except Exception as exc:
        text = f"{phase} on {host.name}: {type(exc).__name__}: {exc}"
        failed(text, unreached=False)
        raise StepFailed(text) from exc


async def _nothing() -> None:
    return None


def _never() -> bool:
    return False
