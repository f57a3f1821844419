"""What an approver approves: the plan of one gate, and its hash.

A gate's plan is everything that decides what the gated step will do: the run, the step, the
runbook's source (its sha256), the env, the params, and the outputs of the probes the step
depends on (directly or through other steps). Its hash is what a decision is bound to (and, in
a ``signers`` env, what is signed), so an approval cannot be carried to another run, another
gate, other code or a world that has changed since: :func:`differences` then names what moved.

Secret params enter the plan as their HMAC-SHA256 keyed by the run id: the same secret gives the
same plan, a different one a different plan, and the value itself is never stored or shown. (A
low-entropy secret could be guessed from its HMAC by someone who knows the run id; the plan is
kept in the store, which is protected like the audit trail.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from runbook.collect import Runbook

SECRET_KEY = "hmac-sha256"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def probes_of(rb: Runbook, step: str) -> list[str]:
    """The probes ``step`` depends on, directly or through other steps, in run order."""
    seen: set[str] = set()
    todo = list(rb.steps[step].predecessors)
    while todo:
        name = todo.pop()
        if name in seen or name not in rb.steps:
            continue
        seen.add(name)
        todo.extend(rb.steps[name].predecessors)
    return [n for n in rb.steps if n in seen and rb.steps[n].kind == "probe"]


def secret_digest(run_id: str, value: Any) -> dict[str, str]:
    digest = hmac.new(run_id.encode(), canonical(value).encode(), hashlib.sha256).hexdigest()
    return {SECRET_KEY: digest}


def build(
    *,
    run_id: str,
    step: str,
    runbook_sha256: str,
    env: str,
    params: Mapping[str, Any],
    secret: frozenset[str],
    probes: Mapping[str, Any],
) -> dict[str, Any]:
    """The plan as a JSON document (what ``runbook show`` prints and the hash covers)."""
    return {
        "run_id": run_id,
        "step": step,
        "runbook_sha256": runbook_sha256,
        "env": env,
        "params": {
            k: (secret_digest(run_id, v) if k in secret else v) for k, v in sorted(params.items())
        },
        "probes": {k: probes[k] for k in probes},
    }


def plan_hash(plan: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(plan).encode()).hexdigest()


def for_gate(
    rb: Runbook,
    step: str,
    *,
    run_id: str,
    env: str,
    params: Any,
    outputs: Mapping[str, Any],
    mask: Callable[[Any], Any] = lambda v: v,
) -> dict[str, Any]:
    """The plan of ``step`` from live values (``params`` is a ``Params``; ``outputs`` by step).

    ``mask`` turns an output into the form the store keeps (secrets masked), so a plan built in
    the run and one rebuilt from the store agree.
    """
    values = {k: params[k] for k in params}
    return build(
        run_id=run_id,
        step=step,
        runbook_sha256=rb.sha256,
        env=env,
        params=values,
        secret=frozenset(params.secret_names),
        probes={p: mask(outputs.get(p)) for p in probes_of(rb, step)},
    )


def _short(value: Any, limit: int = 60) -> str:
    text = canonical(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def differences(approved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What changed between two plans of one gate, one line each, naming the value before/after."""
    out = []
    if approved.get("runbook_sha256") != current.get("runbook_sha256"):
        out.append(
            f"runbook source changed: approved sha256 {str(approved.get('runbook_sha256'))[:12]},"
            f" now {str(current.get('runbook_sha256'))[:12]}"
        )
    for key in ("run_id", "step", "env"):
        if approved.get(key) != current.get(key):
            out.append(f"{key} changed: approved {approved.get(key)}, now {current.get(key)}")
    old_p, new_p = approved.get("params", {}), current.get("params", {})
    for name in sorted(set(old_p) | set(new_p)):
        if old_p.get(name) != new_p.get(name):
            if isinstance(new_p.get(name), dict) and SECRET_KEY in new_p.get(name, {}):
                out.append(f"param {name} changed (secret)")
            else:
                out.append(
                    f"param {name}: approved {_short(old_p.get(name))}, "
                    f"now {_short(new_p.get(name))}"
                )
    old_o, new_o = approved.get("probes", {}), current.get("probes", {})
    for name in [*old_o, *[n for n in new_o if n not in old_o]]:
        if old_o.get(name) != new_o.get(name):
            out.append(
                f"probe {name}: approved {_short(old_o.get(name))}, now {_short(new_o.get(name))}"
            )
    return out
