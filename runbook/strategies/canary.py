"""``canary``: shift traffic to the new version weight by weight, bake, analyse, abort to 0.

For ``weights=[5, 50, 100], bake=300, analysis=ok, pause_at=[50]`` the group is the chain::

    shift-5 -> bake-5 -> analyze-5 -> approve-50 -> shift-50 -> bake-50 -> analyze-50
            -> shift-100 -> bake-100 -> analyze-100

Every ``shift-W`` is reversible and its rollback sets the canary's weight to 0 (baseline 100):
when anything after it fails, the engine rolls back in reverse order and the first rollback to
run already takes all traffic off the canary. The later ones write the same weights again, which
is harmless and keeps each rollback correct on its own (a resumed run may roll back any subset).
A shift that itself fails is rolled back too (the engine undoes a failed step first), so a
router error half-way through a shift still ends at weight 0.

There is no ``max_surge``: a canary moves traffic between two targets that already exist, so
there is no extra capacity to bound. Capacity belongs to the deploy that created the canary, and
for host-by-host rollouts to ``rolling(max_unavailable=...)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from runbook.groups import GroupStep, StepGroup
from runbook.markers import Approval
from runbook.strategies.base import (
    Definition,
    as_after,
    bake_step,
    chain,
    checked,
    gate_step,
    label,
    named,
    verdict,
)


def _weights(where: Definition, weights: Any) -> tuple[int, ...]:
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence) or not weights:
        raise where.error(f"weights= must be a non-empty list of percentages, got {weights!r}")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, int) or not 0 < w <= 100:
            raise where.error(f"weights= must be integers with 0 < w <= 100, got {w!r}")
    for prev, cur in itertools.pairwise(weights):
        if cur <= prev:
            raise where.error(f"weights= must be strictly increasing, got {list(weights)}")
    return tuple(weights)


def canary(
    service: str,
    *,
    weights: Sequence[int],
    bake: float = 0,
    analysis: Callable[..., Any] | None = None,
    pause_at: Sequence[int] = (),
    approval: Approval | bool = True,
    baseline: str = "stable",
    canary: str = "canary",
    after: Any = (),
    when: Callable[..., Any] | None = None,
) -> StepGroup:
    """Progressive traffic shift from ``baseline`` to ``canary`` through ``weights`` (percent).

    After each shift: wait ``bake`` seconds on the run's clock (no ``bake-W`` step when 0), then
    call ``analysis`` (injected like a step, plus ``service`` and ``weight``); it fails the step
    by returning ``False`` or a non-healthy ``ProbeResult``, or by raising. ``pause_at`` lists
    weights to ask for ``approval`` (an ``Approval`` for four eyes) before shifting to.
    ``after`` orders the group after other steps; ``when`` runs or skips the whole group.
    """
    where = Definition("canary")
    where.condition(when)
    service = where.name(service, "service")
    ladder = _weights(where, weights)
    seconds = where.seconds(bake, "bake")
    check = where.callback(analysis, "analysis", required=False)
    pauses = tuple(pause_at or ())
    unknown = sorted(set(pauses) - set(ladder))
    if unknown:
        raise where.error(f"pause_at= {unknown} are not in weights= {list(ladder)}")
    gate = where.approval(approval, "approval")
    if pauses and gate is None:
        raise where.error("pause_at= needs approval= (True or Approval(...)), got False")
    baseline = where.name(baseline, "baseline")
    canary = where.name(canary, "canary")
    if baseline == canary:
        raise where.error(f"baseline= and canary= must differ, both are {canary!r}")

    steps: list[GroupStep] = []
    for weight in ladder:
        if weight in pauses:
            assert gate is not None
            steps.append(
                gate_step(
                    f"approve-{weight}",
                    gate,
                    f"Approval gate before {service} gets {weight}% canary.",
                    where,
                )
            )
        steps.append(
            GroupStep(
                f"shift-{weight}",
                _shift(service, canary, baseline, weight),
                where.options(reversible=True, idempotent=True),
                rollback=_abort(service, canary, baseline, weight),
            )
        )
        if seconds:
            steps.append(
                GroupStep(
                    f"bake-{weight}",
                    bake_step(
                        service, seconds, f"Bake {service} at {weight}% canary.", f"bake-{weight}"
                    ),
                    where.options(idempotent=True),
                )
            )
        if check is not None:
            steps.append(
                GroupStep(
                    f"analyze-{weight}",
                    _analyze(service, weight, check),
                    where.options(idempotent=True),
                    uses=(check,),
                    extra=("service", "weight"),
                )
            )
    return StepGroup(
        strategy="canary",
        service=service,
        steps=chain(steps),
        after=as_after(after),
        file=where.file,
        line=where.line,
    )


def _shift(service: str, canary: str, baseline: str, weight: int) -> Callable[..., Any]:
    async def shift(router: Any, ctx: Any) -> dict[str, Any]:
        before = router.weights(service)
        after = {canary: weight, baseline: 100 - weight}
        router.set_weights(service, after)
        ctx.record_change(f"router:{service}", before, after)
        return {"service": service, "weight": weight, "weights": after}

    return named(
        shift,
        f"shift-{weight}",
        f"Send {weight}% of {service} traffic to {canary}, {100 - weight}% to {baseline}.",
    )


def _abort(service: str, canary: str, baseline: str, weight: int) -> Callable[..., Any]:
    async def abort(router: Any, ctx: Any, output: Any) -> None:
        # ``output`` is None when this shift itself failed half-way: aborting is right either way.
        before = router.weights(service)
        after = {canary: 0, baseline: 100}
        router.set_weights(service, after)
        ctx.record_change(f"router:{service}", before, after)

    return named(
        abort,
        f"abort-{weight}",
        f"Take all {service} traffic off {canary} (weight 0), back to {baseline}.",
    )


def _analyze(service: str, weight: int, check: Callable[..., Any]) -> Callable[..., Any]:
    what = f"canary analysis {label(check)} for {service} at {weight}%"

    async def analyze(injector: Any) -> dict[str, Any]:
        result = await checked(what, injector.acall(check, service=service, weight=weight))
        verdict(result, what)
        return {"service": service, "weight": weight, "passed": True}

    return named(
        analyze,
        f"analyze-{weight}",
        f"Run {label(check)} on {service} at {weight}% canary; failure aborts to 0.",
    )
