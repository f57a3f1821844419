"""Decisions on stored runs: ``approve``, ``deny``, ``cancel`` and ``sweep``.

The actor is ``--as`` (else ``RUNBOOK_ACTOR``, else git ``user.email``, else the OS user): a
*claimed* identity. In an env with ``signers = "allowed_signers"`` each decision is signed with
``--sign KEY`` (or ``RUNBOOK_SIGNING_KEY``; a ``.pub`` file whose key is in ssh-agent works) and
the actor is the principal the signature verifies as. A refused decision is audited
(``approval_refused``) and exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from runbook.cli.common import config_option, handle_errors, store_option
from runbook.cli.exec_ import drive
from runbook.cli.identity import claimed_actor, sign_option
from runbook.cli.runs import _align, _runner, _settled, as_option, json_option


@click.command("approve")
@click.argument("run_id")
@click.option("--step", metavar="STEP", help="The gated step (needed when several wait).")
@as_option
@sign_option
@click.option("--comment", default="", metavar="TEXT", help="Why; kept in the audit trail.")
@store_option
@config_option
@handle_errors
def approve(
    run_id: str,
    step: str | None,
    as_: str | None,
    sign: str | None,
    comment: str,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Approve the plan a paused run's gate shows. `runbook resume` then continues it."""
    runner, _ = _runner(store_url, config_path, as_, json_output=True, run_id=run_id)
    outcome = runner.approve(
        run_id, step=step, actor=claimed_actor(as_), comment=comment, sign=sign
    )
    got = len(outcome["approvers"])
    signed = " (signed)" if outcome.get("signed") else ""
    click.echo(
        f"approved {outcome['step']} of run {run_id} as {outcome['actor']}{signed} "
        f"({got}/{outcome['needed']} approvals)"
    )
    if outcome["satisfied"] and outcome.get("continues"):  # a run its executor drives
        click.echo("the run goes on by itself on its workers")
    elif outcome["satisfied"]:
        click.echo(f"next: runbook resume {run_id}")
    else:
        click.echo(f"waiting for {outcome['missing']}")


@click.command("deny")
@click.argument("run_id")
@click.option("--reason", required=True, metavar="TEXT", help="Why; kept in the audit trail.")
@as_option
@sign_option
@json_option
@store_option
@config_option
@handle_errors
def deny(
    run_id: str,
    reason: str,
    as_: str | None,
    sign: str | None,
    as_json: bool,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Deny a paused run's approval: the run ends and what completed is rolled back."""
    runner, reporter = _runner(store_url, config_path, as_, json_output=as_json, run_id=run_id)
    _align(reporter, runner, run_id)
    result = drive(lambda: runner.adeny(run_id, actor=claimed_actor(as_), reason=reason, sign=sign))
    _settled(result, as_json)


@click.command("cancel")
@click.argument("run_id")
@as_option
@sign_option
@json_option
@store_option
@config_option
@handle_errors
def cancel(
    run_id: str,
    as_: str | None,
    sign: str | None,
    as_json: bool,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Cancel a paused or crashed run, rolling back the steps that completed."""
    runner, reporter = _runner(store_url, config_path, as_, json_output=as_json, run_id=run_id)
    _align(reporter, runner, run_id)
    result = drive(lambda: runner.acancel(run_id, actor=claimed_actor(as_), sign=sign))
    _settled(result, as_json)


@click.command("sweep")
@json_option
@store_option
@config_option
@handle_errors
def sweep(as_json: bool, store_url: str | None, config_path: Path | None) -> None:
    """Apply every expired approval timeout (`Approval(timeout=...)`); for cron.

    Each expired gate is recorded as `approval_expired` by the actor `runbook` and its run is
    settled (denied or failed, as the gate says), rolling back what completed.
    """
    from runbook.errors import exit_code
    from runbook.expiry import sweep as apply_all

    runner, _ = _runner(store_url, config_path, json_output=True)
    swept = apply_all(runner.durable)
    if as_json:
        doc: dict[str, Any] = {
            "schema": "runbook.sweep/1",
            "expired": swept.expired,
            "problems": [{"run_id": run_id, "error": line} for run_id, line, _ in swept.problems],
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        for line in swept.expired:
            click.echo(line)
        decided = f"{len(swept.expired)} expired gate(s) decided"
        click.echo(decided if swept.expired or swept.problems else "nothing expired")
    if swept.problems:
        for _, line, _ in swept.problems:
            click.echo(f"runbook: error: {line}", err=True)
        sys.exit(exit_code(swept.problems[0][2]))


COMMANDS = [approve, deny, cancel, sweep]
