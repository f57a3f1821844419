"""``rolling``: deploy hosts batch by batch, health-check each, stop and roll back on failure.

``rolling(["a", "b", "c", "d", "e"], batch=2, ...)`` is the chain ``batch-1`` (a, b) ->
``batch-2`` (c, d) -> ``batch-3`` (e). A batch is the unit of progress, audit and rollback: one
reversible step that deploys its hosts and waits for each to be healthy.

``max_unavailable`` bounds how many hosts are out of service at the same moment: within a batch,
hosts are deployed and health-checked in waves of at most ``max_unavailable`` hosts, concurrently
within a wave. The default 1 takes one host down at a time; ``max_unavailable=batch`` does the
whole batch at once. (It is not a failure budget: any failed deploy or health check stops the
rollout. Safety-critical rollouts should not quietly leave broken hosts behind.)

On failure the engine rolls back the failed batch first, then the earlier batches in reverse
order, each host by host in reverse. A failed (or interrupted) batch is rolled back whole, since
only the batch knew how far it got: ``rollback=`` must therefore be safe on a host the batch had
not reached yet (restoring the current version is a no-op). Without ``rollback=`` the batches are
not reversible and a failure stops the rollout where it is.

The host list is fixed when the runbook is loaded (the steps must exist for ``list`` and
``graph``): read an inventory file at import time if it is not a literal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from runbook.errors import StepFailed
from runbook.groups import GroupStep, StepGroup
from runbook.probes import await_until
from runbook.strategies.base import (
    Definition,
    as_after,
    chain,
    checked,
    label,
    named,
)

_EXTRA = ("service", "host", "batch")


def _hosts(where: Definition, hosts: Any) -> tuple[str, ...]:
    if isinstance(hosts, str | bytes) or not isinstance(hosts, Sequence) or not hosts:
        raise where.error(f"hosts must be a non-empty list of host names, got {hosts!r}")
    names = tuple(where.name(h, "each host") for h in hosts)
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise where.error(f"hosts appear more than once: {dupes}")
    return names


def rolling(
    hosts: Sequence[str],
    *,
    deploy: Callable[..., Any],
    batch: int = 1,
    health: Callable[..., Any] | None = None,
    rollback: Callable[..., Any] | None = None,
    max_unavailable: int = 1,
    health_timeout: float = 300.0,
    health_backoff: float = 2.0,
    service: str | None = None,
    after: Any = (),
    when: Callable[..., Any] | None = None,
) -> StepGroup:
    """Rolling release over ``hosts`` in batches of ``batch``. Callbacks are injected like steps,
    plus ``host``, ``batch`` (1-based) and ``service``. ``health`` is polled per host until
    truthy, for at most ``health_timeout`` seconds; ``rollback`` restores one host. ``after``
    orders the group after other steps; ``when`` runs or skips the whole group."""
    where = Definition("rolling")
    where.condition(when)
    names = _hosts(where, hosts)
    size = where.count(batch, "batch")
    wave = where.count(max_unavailable, "max_unavailable")
    deploy_fn = where.callback(deploy, "deploy", required=True)
    assert deploy_fn is not None
    health_fn = where.callback(health, "health", required=False)
    undo_fn = where.callback(rollback, "rollback", required=False)
    timeout = where.seconds(health_timeout, "health_timeout", positive=True)
    backoff = where.seconds(health_backoff, "health_backoff", positive=True)
    if service is not None:
        service = where.name(service, "service")

    plan = _Plan(service, deploy_fn, health_fn, undo_fn, min(wave, size), timeout, backoff)
    uses = tuple(f for f in (deploy_fn, health_fn, undo_fn) if f is not None)
    steps = [
        GroupStep(
            f"batch-{number}",
            plan.batch_step(number, names[start : start + size]),
            where.options(reversible=undo_fn is not None),
            rollback=plan.rollback_step(number, names[start : start + size]) if undo_fn else None,
            uses=uses,
            extra=_EXTRA,
        )
        for number, start in enumerate(range(0, len(names), size), start=1)
    ]
    return StepGroup(
        strategy="rolling",
        service=service or "",
        steps=chain(steps),
        after=as_after(after),
        file=where.file,
        line=where.line,
    )


class _Plan:
    """The callbacks and limits every batch step of one rollout shares (read-only)."""

    def __init__(
        self,
        service: str | None,
        deploy: Callable[..., Any],
        health: Callable[..., Any] | None,
        undo: Callable[..., Any] | None,
        wave: int,
        timeout: float,
        backoff: float,
    ) -> None:
        self.service = service
        self.deploy = deploy
        self.health = health
        self.undo = undo
        self.wave = wave
        self.timeout = timeout
        self.backoff = backoff

    async def _deploy_host(self, injector: Any, host: str, number: int) -> None:
        await checked(
            f"deploy {label(self.deploy)} on {host}",
            injector.acall(self.deploy, service=self.service, host=host, batch=number),
        )

    async def _wait_healthy(
        self, injector: Any, clock: Any, ctx: Any, host: str, number: int
    ) -> None:
        assert self.health is not None
        fn = self.health
        await await_until(
            lambda: injector.acall(fn, service=self.service, host=host, batch=number),
            self.timeout,
            self.backoff,
            clock=clock,
            progress=ctx.progress,
            message=f"{label(fn)}: {host} healthy",
        )

    async def _undo_hosts(self, injector: Any, hosts: Sequence[str], number: int) -> list[str]:
        """Roll back ``hosts`` newest first; keep going past a failure and return the failures."""
        assert self.undo is not None
        failures = []
        for host in reversed(hosts):
            try:
                await injector.acall(self.undo, service=self.service, host=host, batch=number)
            except Exception as exc:
                failures.append(f"{host}: {type(exc).__name__}: {exc}")
        return failures

    async def _wave(
        self, injector: Any, clock: Any, ctx: Any, hosts: Sequence[str], number: int
    ) -> None:
        """Deploy a wave concurrently, then health-check it; raise the first failure by host."""
        for phase in ("deploy", "health"):
            if phase == "health" and self.health is None:
                return
            results = await asyncio.gather(
                *(
                    self._deploy_host(injector, h, number)
                    if phase == "deploy"
                    else self._wait_healthy(injector, clock, ctx, h, number)
                    for h in hosts
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result
                    raise StepFailed(str(result)) from result

    def batch_step(self, number: int, hosts: tuple[str, ...]) -> Callable[..., Any]:
        async def run_batch(injector: Any, clock: Any, ctx: Any) -> dict[str, Any]:
            for start in range(0, len(hosts), self.wave):
                wave = hosts[start : start + self.wave]
                ctx.progress(f"batch {number}: {', '.join(wave)}", start / len(hosts))
                await self._wave(injector, clock, ctx, wave, number)
            return {"batch": number, "hosts": list(hosts)}

        return named(
            run_batch,
            f"batch-{number}",
            f"Deploy and health-check {', '.join(hosts)} ({self.wave} at a time).",
        )

    def rollback_step(self, number: int, hosts: tuple[str, ...]) -> Callable[..., Any]:
        # All of the batch's hosts, whether it succeeded, failed or was interrupted: only the
        # batch itself knew how far it got, and it may have died with that knowledge.
        async def undo_batch(injector: Any) -> None:
            failures = await self._undo_hosts(injector, hosts, number)
            if failures:
                raise StepFailed(f"rollback of batch {number} failed for {'; '.join(failures)}")

        return named(
            undo_batch,
            f"undo-batch-{number}",
            f"Roll back {', '.join(hosts)}, last first.",
        )
