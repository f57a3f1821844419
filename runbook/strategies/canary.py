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

With a metric analysis (``analysis=runbook.analysis.prometheus(...)``) each weight gets a
``measure-W`` step instead of ``bake-W``: it bakes while measuring every ``interval`` (so a
regression aborts during the bake, not after it), and fails on a ``fail`` verdict. After it comes
``analyze-W``, an approval gate that only runs when the verdict was ``inconclusive``: the run
pauses there for a human, approve continues, deny aborts. A passing verdict skips the gate.

The abort is ordered and verified: set the canary to 0, read the router back, and raise
``AbortUnconfirmed`` if the canary still has weight; the engine then stops rolling back, so the
rollbacks of the steps before the canary (scale down, uninstall) never run while the canary
still takes traffic (Argo Rollouts PR #4867).

There is no ``max_surge``: a canary moves traffic between two targets that already exist, so
there is no extra capacity to bound. Capacity belongs to the deploy that created the canary, and
for host-by-host rollouts to ``rolling(max_unavailable=...)``.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from runbook.errors import RollbackHalted, StepFailed
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
    metric = analysis if callable(getattr(analysis, "evaluate", None)) else None
    check = None if metric else where.callback(analysis, "analysis", required=False)
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
        if metric is not None:
            steps += _metric_steps(where, service, weight, metric, seconds, gate or Approval())
            continue
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
    if metric is not None:
        # The last analyze gate is skipped when the analysis passed, and a skipped step would
        # skip whatever depends on the group: end on a step that always runs.
        steps.append(GroupStep("confirm", _confirm(service, canary, ladder[-1]), where.options()))
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
        now = router.weights(service)
        ctx.record_change(f"router:{service}", before, now)
        if now.get(canary) != weight or now.get(baseline) != 100 - weight:
            raise StepFailed(f"router reads {service} back as {now} after setting {after}")
        return {"service": service, "weight": weight, "weights": after}

    return named(
        shift,
        f"shift-{weight}",
        f"Send {weight}% of {service} traffic to {canary}, {100 - weight}% to {baseline}.",
    )


def _abort(service: str, canary: str, baseline: str, weight: int) -> Callable[..., Any]:
    async def abort(router: Any, ctx: Any, output: Any) -> None:
        # ``output`` is None when this shift itself failed half-way: aborting is right either way.
        # Any failure here halts the rollback: undoing the deploy under a canary that still takes
        # traffic is the outage the abort exists to prevent.
        after = {canary: 0, baseline: 100}
        try:
            before = router.weights(service)
            router.set_weights(service, after)
            now = router.weights(service)
        except Exception as exc:
            raise RollbackHalted(
                f"could not take {service} traffic off {canary}: {type(exc).__name__}: {exc}"
            ) from exc
        ctx.record_change(f"router:{service}", before, now)
        if now.get(canary, 0) != 0:
            raise RollbackHalted(
                f"{service} still sends {now.get(canary)}% to {canary} after the abort "
                f"(router reads {now})"
            )

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


def _sibling(local: str) -> inspect.Signature:
    """A signature asking for one sibling step's output by its local name (``measure_5``)."""
    return inspect.Signature([inspect.Parameter(local, inspect.Parameter.KEYWORD_ONLY)])


def _metric_steps(
    where: Definition,
    service: str,
    weight: int,
    metric: Any,
    seconds: float,
    gate: Approval,
) -> list[GroupStep]:
    what = f"canary analysis {label(metric)} for {service} at {weight}%"
    measured = f"measure_{weight}"

    async def measure(clock: Any, ctx: Any, http: Any) -> dict[str, Any]:
        def record(m: Any) -> None:
            ctx.record_measurement({"weight": weight, **m.to_dict()})

        verdict = await metric.evaluate(
            clock=clock, record=record, progress=ctx.progress, bake=seconds, client=http
        )
        if verdict.outcome == "fail":
            raise StepFailed(f"{what}: fail: {verdict.reason}")
        return {"service": service, "weight": weight, **verdict.to_dict()}

    def inconclusive(**kwargs: Any) -> bool:
        return bool(kwargs[measured]["outcome"] != "pass")

    def reason(**kwargs: Any) -> str:
        return gate_reason(what, kwargs[measured])

    async def decided(**kwargs: Any) -> dict[str, Any]:
        verdict = kwargs[measured]
        return {
            "service": service,
            "weight": weight,
            "outcome": verdict["outcome"],
            "approved": True,
            "reason": verdict["reason"],
        }

    for fn in (inconclusive, reason, decided):
        fn.__signature__ = _sibling(measured)  # type: ignore[attr-defined,union-attr]
    window = max(seconds, metric.duration)
    return [
        GroupStep(
            f"measure-{weight}",
            named(
                measure,
                f"measure-{weight}",
                f"Bake {service} at {weight}% canary for {window:g}s, measuring {label(metric)} "
                f"every {metric.interval:g}s; a failed analysis aborts to 0.",
            ),
            where.options(idempotent=True),
        ),
        GroupStep(
            f"analyze-{weight}",
            named(
                decided,
                f"analyze-{weight}",
                f"Approval gate, only when the analysis of {service} at {weight}% was "
                "inconclusive: approve continues, deny aborts to 0.",
            ),
            replace(where.options(approval=replace(gate, reason=reason)), when=inconclusive),
        ),
    ]


def gate_reason(what: str, verdict: dict[str, Any]) -> str:
    """What the approver of an inconclusive analysis is shown: the verdict and every value."""
    values = ", ".join(
        f"{m['value']:g}" if m["value"] is not None else f"none ({m['detail']})"
        for m in verdict["measurements"]
    )
    return f"{what} inconclusive: {verdict['reason']}; measurements: {values}"


def _confirm(service: str, canary: str, weight: int) -> Callable[..., Any]:
    async def confirm(router: Any) -> dict[str, Any]:
        now = router.weights(service)
        if now.get(canary) != weight:
            raise StepFailed(f"router reads {service} as {now}, expected {canary} at {weight}%")
        return {"service": service, "weight": weight, "weights": now}

    return named(
        confirm,
        "confirm",
        f"Read the router back: {service} ends with {weight}% on {canary}.",
    )
