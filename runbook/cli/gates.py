"""What ``runbook show`` and ``runbook runs`` say about gates: the plan, its hash, what is next.

Both commands "touch" a run, so they also apply expired approval timeouts first (see
runbook/expiry.py): what they print is then the run's real state, not one a cron job would
change a minute later.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

from runbook.approval_policy import gate_state
from runbook.decisions import gate_status
from runbook.expiry import settle_due


def apply_timeouts(runner: Any, records: Iterable[Any]) -> list[str]:
    """Settle the expired gates of the runs a command shows. A run that cannot be settled (its
    runbook file is gone) is a warning: the command still shows every run, as stored."""
    messages = []
    for record in records:
        settled, problem = settle_due(runner.durable, record)
        for line in settled:
            click.echo(f"runbook: {line}", err=True)
            messages.append(line)
        if problem is not None:
            click.echo(f"runbook: warning: {problem[0]}", err=True)
    return messages


def _waiting(runner: Any, record: Any) -> list[str]:
    steps = runner.store.get_steps(record.run_id)
    return [n for n, s in steps.items() if s.status == "awaiting_approval"]


def _load(runner: Any, record: Any) -> Any:
    try:
        return runner.durable.load_run(record)
    except Exception:  # a missing or broken runbook: show still shows what the store holds
        return None


def gates_json(runner: Any, record: Any) -> dict[str, Any]:
    rb = _load(runner, record)
    out = {}
    for name in _waiting(runner, record):
        state = gate_state(record.options, name) or {}
        satisfied, missing = gate_status(runner.durable, record, rb, name) if rb else (False, "?")
        out[name] = {**state, "satisfied": satisfied, "missing": missing}
    return out


def gate_lines(runner: Any, record: Any) -> list[str]:
    """The plan each waiting gate asks approval for, and the command that is actually next."""
    if record.status != "paused":
        return []
    rb = _load(runner, record)
    lines: list[str] = []
    waiting = _waiting(runner, record)
    pending = []
    env = runner.envs.rules(record.env)
    for name in waiting:
        state = gate_state(record.options, name) or {}
        satisfied, missing = gate_status(runner.durable, record, rb, name) if rb else (False, "?")
        lines.append(f"gate {name}: {'approved' if satisfied else 'waiting for ' + missing}")
        if state:
            lines.append(f"  plan sha256 {state.get('plan_hash')}")
            plan = state.get("plan") or {}
            lines.append(f"  runbook sha256 {plan.get('runbook_sha256')}  env {plan.get('env')}")
            for key, value in (plan.get("params") or {}).items():
                lines.append(f"  param {key} = {json.dumps(value, default=str)}")
            for key, value in (plan.get("probes") or {}).items():
                text = json.dumps(value, default=str)
                lines.append(f"  probe {key} = {text if len(text) <= 100 else text[:99] + '…'}")
            if state.get("deadline"):
                lines.append(f"  expires {state['deadline']} ({state.get('on_timeout')})")
        if not satisfied:
            pending.append(name)
    sign = " --sign KEY" if env.signers is not None else ""
    for name in pending:
        lines.append(f"next: runbook approve {record.run_id} --step {name}{sign}")
    if pending:
        lines.append(f"then: runbook resume {record.run_id}")
    elif waiting:
        lines.append(f"next: runbook resume {record.run_id}")
    return lines
