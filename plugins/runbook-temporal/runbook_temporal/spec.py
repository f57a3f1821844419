"""A collected runbook as data: what the workflow needs to decide, without the functions.

The workflow never imports a runbook (its code runs in Temporal's deterministic sandbox and is
replayed); a worker collects the runbook and sends this plan, which lands in the run's history.
"""

from __future__ import annotations

from runbook.collect import Arg, Runbook
from runbook.markers import WAIT_ATTR
from runbook_temporal import messages as M


def _args(args: tuple[Arg, ...]) -> list[M.ArgSpec]:
    return [M.ArgSpec(a.name, a.source, a.key, a.has_default) for a in args]


def plan_of(rb: Runbook) -> M.Plan:
    steps = []
    for name, step in rb.steps.items():
        opts = step.options
        approval = None
        if opts.approval is not None:
            approval = M.ApprovalSpec(
                opts.approval.min, opts.approval.allow_self, list(opts.approval.approvers)
            )
        steps.append(
            M.StepSpec(
                name=name,
                kind=step.kind,
                deps=list(step.deps),
                after=list(step.after),
                args=_args(step.args),
                when=_args(step.when_args) if step.when_args is not None else None,
                rollback=_args(step.rollback.args) if step.rollback is not None else None,
                reversible=step.reversible,
                retries=opts.retries,
                backoff=opts.backoff,
                backoff_max=opts.backoff_max,
                timeout=opts.timeout,
                required=opts.required,
                idempotent=opts.idempotent,
                lock=opts.lock,
                queue=opts.queue,
                approval=approval,
                wait=float(getattr(step.func, WAIT_ATTR, 0.0) or 0.0),
            )
        )
    return M.Plan(steps=steps)
