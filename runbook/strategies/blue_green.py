"""``blue_green``: deploy the idle color, prove it healthy, switch all traffic, keep the old color.

The group is the chain (optional steps in brackets)::

    deploy -> health -> [approve-switch] -> switch -> [bake] -> [scale-down]

The idle color is the one of ``colors`` that ``router.active(service)`` is not (the first color
when the service has no traffic yet). Every step reads it from the router rather than from memory,
so a run paused at ``approve-switch`` and resumed elsewhere deploys, checks and switches the same
color. Rollback:

* ``switch`` is reversible: its rollback switches traffic back to the color it took it from. The
  old color was never touched, so that is instant. On a first deploy there is nothing to go back
  to and the rollback leaves routing alone. If the router call itself fails, the step switches
  traffic back to the old color before failing (the router may have applied the switch).
* ``deploy`` is reversible only when ``undeploy=`` is given (it is called with the same
  ``color``, also when the deploy failed half-way); a deploy cannot undo itself, and the idle
  color carries no traffic anyway.
* ``scale-down`` runs last and is ``required=False``: once the old color is being scaled down,
  sending traffic back to it would be worse than a failed cleanup, so its failure is recorded
  and reported without rolling back the switch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runbook.errors import StepFailed
from runbook.groups import GroupStep, StepGroup
from runbook.markers import Approval
from runbook.probes import await_until
from runbook.strategies.base import (
    Definition,
    as_after,
    bake_step,
    chain,
    checked,
    gate_step,
    label,
    named,
)

_EXTRA = ("service", "color")


def idle_color(live: str | None, colors: tuple[str, str], service: str) -> str:
    if live is None:
        return colors[0]
    if live not in colors:
        raise StepFailed(f"{service} is live on {live!r}, which is not one of {list(colors)}")
    return colors[1] if live == colors[0] else colors[0]


def blue_green(
    service: str,
    *,
    deploy: Callable[..., Any],
    health: Callable[..., Any],
    switch_approval: Approval | bool = False,
    colors: Sequence[str] = ("blue", "green"),
    health_timeout: float = 300.0,
    health_backoff: float = 2.0,
    undeploy: Callable[..., Any] | None = None,
    bake: float = 0,
    scale_down: Callable[..., Any] | None = None,
    after: Any = (),
    when: Callable[..., Any] | None = None,
) -> StepGroup:
    """Blue-green release of ``service``. Callbacks are injected like steps, plus ``service`` and
    ``color``. ``health`` is polled (backoff from ``health_backoff`` seconds, capped at 30) until it
    returns something truthy, for at most ``health_timeout`` seconds. ``after`` orders the group
    after other steps; ``when`` runs or skips the whole group."""
    where = Definition("blue_green")
    where.condition(when)
    service = where.name(service, "service")
    deploy_fn = where.callback(deploy, "deploy", required=True)
    health_fn = where.callback(health, "health", required=True)
    undeploy_fn = where.callback(undeploy, "undeploy", required=False)
    scale_fn = where.callback(scale_down, "scale_down", required=False)
    assert deploy_fn is not None and health_fn is not None
    gate = where.approval(switch_approval, "switch_approval")
    if isinstance(colors, str) or len(colors) != 2:
        raise where.error(f"colors= must be two names, got {colors!r}")
    pair = (where.name(colors[0], "colors[0]"), where.name(colors[1], "colors[1]"))
    if pair[0] == pair[1]:
        raise where.error(f"colors= must be two different names, got {list(colors)}")
    timeout = where.seconds(health_timeout, "health_timeout", positive=True)
    backoff = where.seconds(health_backoff, "health_backoff", positive=True)
    seconds = where.seconds(bake, "bake")

    steps = [
        GroupStep(
            "deploy",
            _deploy(service, pair, deploy_fn),
            where.options(reversible=undeploy_fn is not None),
            rollback=_undeploy(service, pair, undeploy_fn) if undeploy_fn else None,
            uses=(deploy_fn,) + ((undeploy_fn,) if undeploy_fn else ()),
            extra=_EXTRA,
        ),
        GroupStep(
            "health",
            _health(service, pair, health_fn, timeout, backoff),
            where.options(idempotent=True),
            uses=(health_fn,),
            extra=_EXTRA,
        ),
    ]
    if gate is not None:
        steps.append(
            gate_step(
                "approve-switch", gate, f"Approval gate before switching {service} traffic.", where
            )
        )
    steps.append(
        GroupStep(
            "switch",
            _switch(service, pair),
            # Idempotent: it switches to the color deploy chose, so a re-run after a crash
            # repeats the same switch.
            where.options(reversible=True, idempotent=True),
            rollback=_switch_back(service),
        )
    )
    if seconds:
        steps.append(
            GroupStep(
                "bake",
                bake_step(
                    service,
                    seconds,
                    f"Bake {service} after the switch; cancelling rolls it back.",
                    "bake",
                ),
                where.options(idempotent=True),
            )
        )
    if scale_fn is not None:
        steps.append(
            GroupStep(
                "scale-down",
                _scale_down(service, pair, scale_fn),
                where.options(required=False),
                uses=(scale_fn,),
                extra=_EXTRA,
            )
        )
    return StepGroup(
        strategy="blue_green",
        service=service,
        steps=chain(steps),
        after=as_after(after),
        file=where.file,
        line=where.line,
    )


def _deploy(service: str, colors: tuple[str, str], fn: Callable[..., Any]) -> Callable[..., Any]:
    async def deploy(router: Any, injector: Any) -> dict[str, Any]:
        live = router.active(service)
        color = idle_color(live, colors, service)
        await checked(
            f"deploy {label(fn)} of {service} {color}",
            injector.acall(fn, service=service, color=color),
        )
        return {"service": service, "color": color, "live": live}

    return named(deploy, "deploy", f"Deploy {service} to the idle color with {label(fn)}.")


def _undeploy(service: str, colors: tuple[str, str], fn: Callable[..., Any]) -> Callable[..., Any]:
    async def undeploy(router: Any, injector: Any, output: Any) -> None:
        # A deploy that failed half-way has no output; it never touched routing, so the idle
        # color is still the one it was deploying.
        color = output["color"] if output else idle_color(router.active(service), colors, service)
        await injector.acall(fn, service=service, color=color)

    return named(undeploy, "undeploy", f"Remove the idle {service} deployment with {label(fn)}.")


def _health(
    service: str, colors: tuple[str, str], fn: Callable[..., Any], timeout: float, backoff: float
) -> Callable[..., Any]:
    async def health(router: Any, injector: Any, clock: Any, ctx: Any) -> dict[str, Any]:
        color = idle_color(router.active(service), colors, service)
        await await_until(
            lambda: injector.acall(fn, service=service, color=color),
            timeout,
            backoff,
            clock=clock,
            progress=ctx.progress,
            message=f"{label(fn)}: {service} {color} healthy",
        )
        return {"service": service, "color": color, "healthy": True}

    return named(health, "health", f"Poll {label(fn)} until {service}'s idle color is healthy.")


def _switch(service: str, colors: tuple[str, str]) -> Callable[..., Any]:
    async def switch(router: Any, ctx: Any, deploy: Any) -> dict[str, Any]:
        # Colors come from what ``deploy`` decided, not from the router now: re-running this
        # step after a crash that happened after the router applied it switches to the same
        # color again (a no-op), instead of flipping traffic to the old one.
        live, color = deploy["live"], deploy["color"]
        before = router.weights(service)
        try:
            router.switch(service, color)
        except Exception as exc:
            # The router may or may not have applied it; only this step still knows where
            # traffic came from, so it puts it back before failing (its rollback cannot).
            raise StepFailed(_restore(router, service, live, color, exc)) from exc
        ctx.record_change(f"router:{service}", before, {**dict.fromkeys(before, 0), color: 100})
        return {"service": service, "from": live, "to": color}

    return named(switch, "switch", f"Send all {service} traffic to the new color.")


def _restore(router: Any, service: str, live: str | None, color: str, exc: Exception) -> str:
    message = f"switching {service} to {color} failed: {type(exc).__name__}: {exc}"
    if live is None:
        return message
    try:
        router.switch(service, live)
    except Exception as again:
        return (
            f"{message}; switching back to {live} ALSO failed: {type(again).__name__}: "
            f"{again}; check the router by hand"
        )
    return f"{message}; traffic is back on {live}"


def _switch_back(service: str) -> Callable[..., Any]:
    async def switch_back(router: Any, ctx: Any, output: Any) -> None:
        old = output["from"] if output else None
        if old is None:  # the switch failed (and restored itself) or this was a first deploy
            return
        before = router.weights(service)
        router.switch(service, old)
        ctx.record_change(f"router:{service}", before, {**dict.fromkeys(before, 0), old: 100})

    return named(switch_back, "switch_back", f"Send {service} traffic back to the old color.")


def _scale_down(
    service: str, colors: tuple[str, str], fn: Callable[..., Any]
) -> Callable[..., Any]:
    async def scale_down(router: Any, injector: Any) -> dict[str, Any]:
        old = idle_color(router.active(service), colors, service)
        if old not in router.weights(service):
            # First deploy: the other color never existed, there is nothing to scale down.
            return {"service": service, "color": None}
        await checked(
            f"scale_down {label(fn)} of {service} {old}",
            injector.acall(fn, service=service, color=old),
        )
        return {"service": service, "color": old}

    return named(
        scale_down,
        "scale_down",
        f"Scale down {service}'s old color with {label(fn)} after the bake.",
    )
