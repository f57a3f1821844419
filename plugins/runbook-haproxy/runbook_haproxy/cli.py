"""``runbook router show SERVICE`` and ``runbook router set SERVICE green=100 blue=0``.

They work with whatever router the configuration names (``[tool.runbook] router``, or
``--router URL``), not only HAProxy. ``set`` is a change made by a person outside any runbook, so
it gets what a step would: the lock ``router:SERVICE`` from the configured lock provider (a
canary run or a colleague changing the same service makes it exit 5), and audit events in the
configured sinks (``lock_acquired``, ``change_recorded`` with before/after, ``lock_released``)
under a run id of its own, ``router-<timestamp>-<hex>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from runbook.cli.common import config_option, handle_errors, load_config
from runbook.errors import LockHeld, UsageError
from runbook.routers.memory import check_weights

LEASE = 30.0


def parse_weights(pairs: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"expected TARGET=WEIGHT, got {pair!r}")
        try:
            out[name.strip()] = int(raw)
        except ValueError:
            raise UsageError(f"weight of {name.strip()} must be an integer, got {raw!r}") from None
    if not out:
        raise UsageError("give at least one TARGET=WEIGHT")
    return out


def _runner(config_path: Path | None, router_url: str | None, env: str | None) -> Any:
    from runbook.runner import Runner

    config = load_config(None, config_path)
    runner = Runner.from_config(config, env=env)
    runner.router_url = router_url or config.router
    return runner


def router_option(func: Any) -> Any:
    return click.option(
        "--router",
        "router_url",
        metavar="URL",
        help="Router URL (default from [tool.runbook] router).",
    )(func)


@click.group("router")
def router() -> None:
    """Show or change a service's traffic weights on the configured router."""


@router.command("show")
@click.argument("service")
@router_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@config_option
@handle_errors
def show(service: str, router_url: str | None, as_json: bool, config_path: Path | None) -> None:
    """Print SERVICE's weights, one target per line, and which target is active."""
    runner = _runner(config_path, router_url, None)
    rt = runner.plugins.open("router", runner.router_url)
    weights = rt.weights(service)
    active = rt.active(service)
    if as_json:
        doc = {"service": service, "router": runner.router_url, "weights": weights}
        click.echo(json.dumps({**doc, "active": active}, indent=2))
        return
    if not weights:
        click.echo(f"{service}: no weights")
        return
    width = max(len(t) for t in weights)
    for target, weight in weights.items():
        mark = "  (active)" if target == active else ""
        click.echo(f"{target.ljust(width)}  {weight:>3}{mark}")


def _acquire(provider: Any, name: str, owner: str, actor: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        lease = provider.acquire(name, owner, actor=actor, lease=LEASE)
        if lease is not None:
            return lease
        if time.monotonic() >= deadline:
            holder = provider.holder(name)
            raise LockHeld(name, holder.owner if holder else None, holder.actor if holder else None)
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


@router.command("set")
@click.argument("service")
@click.argument("weights", nargs=-1, required=True, metavar="WEIGHTS...")
@router_option
@click.option("--as", "as_", metavar="ACTOR", help="Who makes the change (default: see docs).")
@click.option("--env", metavar="ENV", help="Environment recorded in the audit events.")
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait for the service's lock.",
)
@config_option
@handle_errors
def set_(
    service: str,
    weights: tuple[str, ...],
    router_url: str | None,
    as_: str | None,
    env: str | None,
    lock_timeout: float,
    config_path: Path | None,
) -> None:
    """Set SERVICE's WEIGHTS (TARGET=WEIGHT pairs summing to 100), locked, audited, read back."""
    from runbook.audit.pipeline import Recorder
    from runbook.context import RunInfo
    from runbook.redact import Redactor
    from runbook.runner import new_run_id

    table = check_weights(service, parse_weights(weights))  # refused before any lock or event
    runner = _runner(config_path, router_url, env)
    if as_:
        runner.actor = as_
    actor = runner.resolved_actor()
    rt = runner.plugins.open("router", runner.router_url)
    run_id = f"router-{new_run_id()}"
    info = RunInfo(
        run_id=run_id,
        runbook="runbook router set",
        name="router",
        sha256="",
        env=runner.env,
        actor=actor,
        params={"service": service, "weights": table, "router": runner.router_url},
    )
    recorder = Recorder(info, runner.sinks, clock=runner.clock, redactor=Redactor())
    provider = runner.lock_provider
    lock_name = f"router:{service}"
    lease = _acquire(provider, lock_name, run_id, actor, lock_timeout) if provider else None
    try:
        if lease is not None:
            recorder.emit("lock_acquired", None, {"lock": lock_name, "fencing_token": lease.token})
        before = rt.weights(service)
        try:
            rt.set_weights(service, table)
        except Exception:
            after = _safe_weights(rt, service)
            if after != before:
                recorder.emit(
                    "change_recorded",
                    None,
                    {"target": f"router:{service}", "before": before, "after": after},
                )
            raise
        after = rt.weights(service)
        recorder.emit(
            "change_recorded",
            None,
            {"target": f"router:{service}", "before": before, "after": after},
        )
    finally:
        if lease is not None:
            provider.release(lease)
            recorder.emit("lock_released", None, {"lock": lock_name, "fencing_token": lease.token})
        runner.close()
    click.echo(f"{service}: {_fmt(before)} -> {_fmt(after)} (audit run {run_id})")


def _safe_weights(rt: Any, service: str) -> dict[str, int] | None:
    try:
        return rt.weights(service)
    except Exception:
        return None


def _fmt(weights: dict[str, int]) -> str:
    return " ".join(f"{t}={w}" for t, w in weights.items()) or "(none)"
