"""Store-backed commands: ``runs``, ``show``, ``resume`` (decisions are in cli/decide.py).

They work from any process on any host that shares the run store: the run that paused for
approval is resumed by whoever approves it, not by the terminal that started it. Configuration is
searched from the current directory (the runbook's own path is in the store).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runbook.cli.building import Activity, build_runner, make_reporter
from runbook.cli.common import (
    config_option,
    handle_errors,
    json_document,
    load_config,
    nothing_stored,
    report_options,
    store_option,
)
from runbook.cli.gates import apply_timeouts, gate_lines, gates_json
from runbook.cli.identity import claimed_actor, sign_option
from runbook.cli.stepview import render_step, require_step, shown_output, step_document, step_events
from runbook.cli.table import table
from runbook.cli.text import first_line, format_duration, label
from runbook.errors import EXIT_ROLLBACK_FAILED, RunbookError, RunNotFound
from runbook.fleet import host_states
from runbook.result import RUN_STATUSES, RunResult

if TYPE_CHECKING:
    from runbook.cli.reporter import TerminalReporter

# ``runbook runs`` reads the store and exits: what drives a run (runbook.cli.exec_: signals, the
# JUnit writer, the views of a run graph) and the fleet's host lines are imported by the
# commands that need them, not at the top (tests/cli/test_startup.py checks ``runs``' imports).


def _runner(
    store_url: str | None,
    config_path: Path | None,
    as_: str | None = None,
    *,
    json_output: bool = False,
    run_id: str | None = None,
    quiet: bool = False,
    no_color: bool = False,
) -> tuple[Any, TerminalReporter | None]:
    config = load_config(None, config_path)
    reporter = None if json_output else make_reporter(quiet=quiet, no_color=no_color)
    runner = build_runner(
        config,
        as_=as_,
        store_url=store_url,
        # Activity: what a second Ctrl-C is told the run still waits for (exec_.drive).
        plugins=[*([reporter] if reporter else []), Activity()],
    )
    if run_id is not None:
        _store(runner, run_id)  # a run id against a store that does not exist: not found
    return runner, reporter


def _align(reporter: TerminalReporter | None, runner: Any, run_id: str) -> None:
    """Line the step column up with every step of the run, like ``exec`` does."""
    if reporter is None:
        return
    names = list(_store(runner).get_steps(run_id))
    try:
        names += list(runner.load(_store(runner).get_run(run_id).runbook_path).steps)
    except Exception:  # the command itself reports a missing or broken runbook properly
        pass
    reporter.width = max((len(n) for n in names), default=0)


def _store(runner: Any, run_id: str | None = None) -> Any:
    """The run store, never created by asking: with no store file yet there is no run ``run_id``."""
    if run_id is not None and nothing_stored(runner.providers.store_spec):
        raise RunNotFound(
            f"no run {run_id!r} in {runner.providers.store_spec} (no run was stored yet)"
        )
    store = runner.store
    if store is None:  # pragma: no cover - the config always names a store
        raise click.UsageError("no run store configured")
    return store


def status_text(record: Any) -> str:
    """The status, and for a ``running`` run whose process is gone on this host, say so: that
    run needs ``resume`` or ``cancel``, not patience."""
    text = label(record.status)
    executor = (record.options or {}).get("executor", "local://")
    if executor.partition(":")[0] != "local":  # driven by its executor's workers, not a process
        return f"{text} (on {executor.partition('?')[0]})"
    if record.status == "running" and record.host == socket.gethostname() and record.pid:
        try:
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return f"{text} (process {record.pid} is gone: resume or cancel it)"
        except PermissionError:
            pass
    return text


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _jsonable(record: Any) -> dict[str, Any]:
    data = asdict(record)
    if "output" in data:
        data["output"], masked = shown_output(data["output"])
        if masked:
            data["output_masked"] = True
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


as_option = click.option(
    "--as",
    "as_",
    metavar="ACTOR",
    help="Who is doing this (default: $RUNBOOK_ACTOR, git user.email, OS user).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


class StatusChoice(click.Choice):
    """A run status as ``runs`` prints it (``rolled back``) or as stored (``rolled_back``)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str):
            value = "_".join(value.strip().lower().replace("-", " ").split())
        return super().convert(value, param, ctx)


@click.command("runs")
@click.option(
    "--status",
    type=StatusChoice(RUN_STATUSES),
    help="Only runs with this status (as shown: 'rolled back' or rolled_back).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="At most this many runs, newest first.",
)
@json_option
@store_option
@config_option
@handle_errors
def runs(
    status: str | None, limit: int, as_json: bool, store_url: str | None, config_path: Path | None
) -> None:
    """List runs from the run store, newest first."""
    runner, _ = _runner(store_url, config_path, json_output=True)
    empty = nothing_stored(runner.providers.store_spec)
    if not empty:
        apply_timeouts(runner, _store(runner).list_runs(status="paused", limit=limit))
    records = [] if empty else _store(runner).list_runs(status=status, limit=limit)
    if as_json:
        click.echo(json_document("runs", {"runs": [_jsonable(r) for r in records]}))
        return
    if not records:
        click.echo("no runs" + (f" with status {status}" if status else ""))
        return
    rows = [["RUN", "STATUS", "ENV", "ACTOR", "RUNBOOK", "STARTED", "UPDATED"]]
    for r in records:
        rows.append(
            [
                r.run_id,
                status_text(r),
                r.env,
                r.actor,
                Path(r.runbook_path).name,
                _when(r.created_at),
                _when(r.updated_at),
            ]
        )
    for line in table(rows):
        click.echo(line)


ROLLED_FORWARD = "started per the audit trail; the run store lost it (resume decides)"


def _as_resume_sees(runner: Any, store: Any, record: Any) -> dict[str, Any]:
    """The run's steps with what its leading trail holds and the store lost (a kill between
    the two writes, a power cut: runbook.trail) rolled forward, each marked: the steps
    ``resume`` will find running. Without the trail, the store alone, and one warning."""
    from runbook import trail  # a run that names its trail only

    stored = store.get_steps(record.run_id)
    if not isinstance(record.options.get(trail.OPTION), str):
        return stored  # no trail leads it: no sink is opened
    try:
        seen = trail.rolled_forward(store, record, runner.sinks, stored)
    except RunbookError as exc:
        click.echo(f"warning: showing the run store alone: {exc}", err=True)
        return stored
    for name, step in seen.items():
        if step is not stored.get(name):
            seen[name] = replace(step, reason=ROLLED_FORWARD)
    return seen


@click.command("show")
@click.argument("run_id")
@json_option
@store_option
@config_option
@click.option(
    "--step",
    "step_name",
    metavar="STEP",
    help="Everything about one step: whole traceback, stderr, what it logged, each attempt.",
)
@handle_errors
def show(
    run_id: str,
    step_name: str | None,
    as_json: bool,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Show one run: its steps (status, attempts, timings, outputs) and approvals."""
    runner, _ = _runner(store_url, config_path, json_output=True, run_id=run_id)
    store = _store(runner)
    apply_timeouts(runner, [store.get_run(run_id)])
    record = store.get_run(run_id)
    steps = _as_resume_sees(runner, store, record)
    if step_name is not None:
        step = require_step(steps, run_id, step_name)
        events = step_events(runner.sinks, run_id, step_name)
        if as_json:
            click.echo(json_document("step", step_document(step, events)))
        else:
            for line in render_step(step, events, _when):
                click.echo(line)
        return
    approvals = store.approvals(run_id)
    decisions = store.interrupt_decisions(run_id)
    if as_json:
        click.echo(
            json_document(
                "show",
                {
                    "run": _jsonable(record),
                    "steps": {name: _jsonable(s) for name, s in steps.items()},
                    "approvals": [_jsonable(a) for a in approvals],
                    "interrupt_decisions": [_jsonable(d) for d in decisions],
                    "gates": gates_json(runner, record),
                    "hosts": host_states(
                        steps, finished=record.status not in ("running", "paused")
                    ),
                },
            )
        )
        return
    click.echo(f"run {record.run_id}: {status_text(record)}")
    click.echo(f"  runbook  {record.runbook_path} (sha256 {record.runbook_sha256[:12]})")
    click.echo(f"  env      {record.env}")
    click.echo(f"  actor    {record.actor}")
    click.echo(f"  host     {record.host or '-'} (pid {record.pid or '-'})")
    click.echo(f"  started  {_when(record.created_at)}   updated {_when(record.updated_at)}")
    if record.params:
        click.echo("  params   " + ", ".join(f"{k}={v}" for k, v in record.params.items()))
    if record.error:
        click.echo(f"  error    {first_line(record.error)}")
    if record.options.get("retry_of"):
        click.echo(f"  retry of {record.options['retry_of']}")
    if record.options.get("limit"):
        click.echo(f"  limit    {','.join(record.options['limit'])}")
    click.echo("steps:")
    if not steps:
        click.echo("  (none started)")
    rows = []
    for s in steps.values():
        detail = first_line(s.error) or (s.reason or "")
        output, _ = shown_output(s.output)
        if output is not None and not detail:
            detail = json.dumps(output, default=str, ensure_ascii=False)
            detail = detail if len(detail) <= 80 else detail[:79] + "…"
        rows.append(
            [
                s.name,
                label(s.status),
                f"x{s.attempts}" if s.attempts else "",
                format_duration(s.duration) or "-",
                detail,
            ]
        )
    for line in table(rows, indent="  "):
        click.echo(line)
    failed = [s.name for s in steps.values() if s.status in ("failed", "rollback_failed")]
    for name in failed:
        click.echo(f"why {name} failed: runbook show {run_id} --step {name}")
    from runbook.cli.retry import hosts_section

    for line in hosts_section(steps, record):
        click.echo(line)
    if approvals:
        click.echo("approvals:")
        for a in approvals:
            auto = " (auto)" if a.auto else ""
            comment = f": {a.comment}" if a.comment else ""
            click.echo(f"  {_when(a.at)}  {a.step}  {a.decision}{auto} by {a.actor}{comment}")
    if decisions:
        click.echo("interrupted steps:")
        for d in decisions:
            click.echo(f"  {_when(d.at)}  {d.step}  {d.choice} (by {d.actor})")
    for line in gate_lines(runner, record):
        click.echo(line)


def _settled(result: RunResult, as_json: bool, junitxml: Path | None = None) -> None:
    """deny/cancel did what was asked: exit 0, unless a rollback failed (4, someone must act)."""
    if junitxml is not None:
        from runbook.cli.junit import write_junit

        write_junit(result, junitxml)
    if as_json:
        click.echo(json_document("run", result.to_dict()))
    raise SystemExit(EXIT_ROLLBACK_FAILED if result.status == "rollback_failed" else 0)


@click.command("resume")
@click.argument("run_id")
@click.option(
    "--retry-interrupted",
    is_flag=True,
    help="Re-run steps that were running when the process died.",
)
@click.option(
    "--skip-interrupted",
    is_flag=True,
    help="Treat steps that were running when the process died as not run.",
)
@as_option
@sign_option
@click.option(
    "--force",
    is_flag=True,
    help="Resume even though the runbook file changed since the run started.",
)
@json_option
@report_options
@store_option
@config_option
@handle_errors
def resume(
    run_id: str,
    retry_interrupted: bool,
    skip_interrupted: bool,
    as_: str | None,
    sign: str | None,
    force: bool,
    as_json: bool,
    quiet: bool,
    no_color: bool,
    junitxml: Path | None,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Continue a paused or crashed run from where it stopped; finished steps are not re-run."""
    from runbook.cli.building import activity_of
    from runbook.cli.exec_ import drive, finish

    if retry_interrupted and skip_interrupted:
        raise click.UsageError("--retry-interrupted and --skip-interrupted exclude each other")
    runner, reporter = _runner(
        store_url,
        config_path,
        as_,
        json_output=as_json,
        run_id=run_id,
        quiet=quiet,
        no_color=no_color,
    )
    _align(reporter, runner, run_id)
    result = drive(
        lambda: runner.aresume(
            run_id,
            retry_interrupted=retry_interrupted,
            skip_interrupted=skip_interrupted,
            force=force,
            actor=claimed_actor(as_),
            sign=sign,
        ),
        activity_of(runner),
    )
    finish(result, as_json, junitxml)


COMMANDS = [runs, show, resume]  # approve, deny, cancel, sweep: runbook/cli/decide.py
