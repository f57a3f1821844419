"""The plan rebuilt as the coordinator's input: ``StepDef``s without functions.

The coordinator reads a runbook's DAG and step options, never its functions, so the workflow can
hand it this shadow of the runbook that a worker collected (see ``spec.plan_of``).
"""

from __future__ import annotations

import inspect
from typing import Any

from runbook.collect import Arg, RollbackDef, StepDef
from runbook.definition import dependents_of
from runbook.markers import StepOptions
from runbook_temporal import messages as M


def _never(**_: Any) -> None:  # pragma: no cover - the workflow never calls a step
    raise RuntimeError("a step function is only ever called in a worker")


def _args(specs: list[M.ArgSpec]) -> tuple[Arg, ...]:
    return tuple(
        Arg(a.name, a.source, a.key, None if a.has_default else inspect.Parameter.empty)
        for a in specs
    )


class ShadowRunbook:
    """What ``Coordinator`` reads of a ``Runbook``: its steps, in order, and their dependents."""

    def __init__(self, steps: dict[str, StepDef]) -> None:
        self.steps = steps

    def dependents(self) -> dict[str, list[str]]:
        return dependents_of(self.steps)


def shadow(plan: M.Plan) -> ShadowRunbook:
    steps = {}
    for s in plan.steps:
        options = StepOptions(
            kind=s.kind,
            name=s.name,
            reversible=s.reversible,
            retries=s.retries,
            backoff=s.backoff,
            backoff_max=s.backoff_max,
            timeout=s.timeout,
            lock=s.lock,
            required=s.required,
            idempotent=s.idempotent,
            queue=s.queue,
        )
        rollback = RollbackDef(_never, _args(s.rollback), False) if s.rollback is not None else None
        steps[s.name] = StepDef(
            name=s.name,
            func=_never,
            options=options,
            args=_args(s.args),
            deps=tuple(s.deps),
            after=tuple(s.after),
            when_args=_args(s.when) if s.when is not None else None,
            rollback=rollback,
        )
    return ShadowRunbook(steps)
