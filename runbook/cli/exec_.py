"""``runbook exec``: run a runbook, with the terminal reporter or one JSON document.

Ctrl-C (SIGINT) and SIGTERM cancel the run task: the engine stops scheduling, cancels running
steps, rolls back what completed and returns ``cancelled`` (exit 130). A second signal during that
rollback is refused with a message, because abandoning a rollback half-way is the one thing worse
than waiting for it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from runbook.cli.building import Activity, build_runner, make_reporter
from runbook.cli.common import (
    config_option,
    handle_errors,
    json_document,
    load_config,
    report_options,
    store_option,
)
from runbook.cli.inspect import plugin_option
from runbook.cli.junit import write_junit
from runbook.errors import EXIT_INTERRUPTED, UsageError
from runbook.params import parse_assignments
from runbook.result import RunResult

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def drive(start: Callable[[], Awaitable[RunResult]], activity: Activity | None = None) -> RunResult:
    """Run ``start()`` on a fresh event loop; the first SIGINT/SIGTERM cancels it.

    The engine turns the cancellation into a rollback and a ``cancelled`` result, so a signal
    never leaves a run half-done without its rollback having been attempted. A second signal is
    refused with a message that says what the run is still waiting for (``activity``).
    """

    async def main() -> RunResult:
        task = asyncio.ensure_future(start())
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def on_signal(signum: int) -> None:
            if not received:
                received.append(signum)
                click.echo(
                    f"\nrunbook: {signal.Signals(signum).name}: cancelling the run, rolling back"
                    " what completed...",
                    err=True,
                )
                task.cancel()
            else:
                doing = activity.waiting_for() if activity else "rolling back what completed"
                click.echo(
                    f"runbook: already cancelling; {doing}. (kill -9 abandons the rollback; "
                    "`runbook show` then tells what state was left)",
                    err=True,
                )

        installed = []
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                try:
                    loop.add_signal_handler(sig, on_signal, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not POSIX
                    pass
        try:
            return await task
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        # Only if the engine could not turn the cancellation into a result (it normally does).
        click.echo("runbook: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


def finish(result: RunResult, as_json: bool, junitxml: Path | None = None) -> None:
    """Write the reports asked for, then exit with the run's documented exit code."""
    if junitxml is not None:
        write_junit(result, junitxml)
    if as_json:
        click.echo(json_document("run", result.to_dict()))
    code = result.exit_code
    if _stuck_step_threads():
        # A cancelled sync step cannot be interrupted inside its worker thread, and interpreter
        # shutdown would wait for it. The run is already rolled back and recorded, so that
        # thread must not go on changing things: leave now.
        click.echo(
            "runbook: a cancelled step was still running in a worker thread; exiting", err=True
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _stuck_step_threads(grace: float = 1.0) -> list[str]:
    """Step worker threads still alive after ``grace`` seconds (idle ones exit at shutdown)."""
    deadline = time.monotonic() + grace
    stuck = []
    for thread in threading.enumerate():
        if thread.name.startswith("runbook-step"):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                stuck.append(thread.name)
    return stuck


def check_env(config: Any, env: str | None) -> None:
    """A typo in ``--env`` must not silently run with a weaker protection level.

    DESIGN.md gives an env without a section the ``standard`` level. That stays true when the
    project declares no environments at all; once it declares some, ``--env prdo`` is an error
    naming them instead of a ``standard`` run where ``prod`` would have been ``strict``.
    """
    envs = getattr(config, "envs", None) or {}
    if env is not None and envs and env not in envs:
        raise UsageError(f"unknown env {env!r}; configured: {', '.join(sorted(envs))}")


@click.command("exec")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "-p",
    "--param",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a runbook parameter (repeatable); converted and validated before anything runs.",
)
@click.option(
    "--env", "env", metavar="ENV", help="Environment (default: config default_env, else dev)."
)
@click.option(
    "--as",
    "as_",
    metavar="ACTOR",
    help="Who is running this (default: $RUNBOOK_ACTOR, git user.email, OS user).",
)
@click.option("--dry-run", is_flag=True, help="Run probes only and print the plan; change nothing.")
@click.option(
    "--yes",
    is_flag=True,
    help="Approve gates as yourself where the env allows it, instead of pausing.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document (the run result) instead of the report.",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    metavar="N",
    help="Run at most N independent steps at once (default 8).",
)
@store_option
@click.option(
    "--inventory",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Inventory file, Ansible INI/YAML or TOML (default: config inventory).",
)
@click.option(
    "--limit",
    metavar="HOSTS",
    help="Only these hosts: names, group:NAME, globs, !exclusions (web-3,group:db).",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Wait this long for a held lock before exiting 5 (default from config, 0).",
)
@click.option(
    "--executor",
    "executor_url",
    metavar="URL",
    help="Where step attempts run (default from config, local://: this process).",
)
@click.option(
    "--detach",
    is_flag=True,
    help="With an executor that runs elsewhere (temporal://): start the run, print its id, exit 0.",
)
@report_options
@config_option
@plugin_option
@handle_errors
def exec_cmd(
    path: Path,
    assignments: tuple[str, ...],
    env: str | None,
    as_: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    max_parallel: int | None,
    store_url: str | None,
    inventory: Path | None,
    limit: str | None,
    lock_timeout: float | None,
    quiet: bool,
    no_color: bool,
    junitxml: Path | None,
    executor_url: str | None,
    detach: bool,
    config_path: Path | None,
    plugin_modules: tuple[str, ...],
) -> None:
    """Run the runbook at PATH.

    \b
    Exit codes: 0 succeeded, 1 failed (rolled back), 2 usage or definition error,
    3 paused for approval, 4 rollback failed, 5 lock held, 130 interrupted.
    """
    if not path.is_file():
        raise UsageError(f"no such runbook file: {path}")
    params = parse_assignments(assignments)
    config = load_config(path.resolve().parent, config_path)
    check_env(config, env)
    reporter = None if as_json else make_reporter(quiet=quiet, no_color=no_color, dry_run=dry_run)
    activity = Activity()
    runner = build_runner(
        config,
        env=env,
        as_=as_,
        store_url=store_url,
        plugins=[*([reporter] if reporter else []), activity, *plugin_modules],
        params=params,
        dry_run=dry_run,
        yes=yes,
        max_parallel=max_parallel,
        lock_timeout=lock_timeout,
        inventory=inventory,
        limit=limit,
        executor=executor_url,
    )
    runbook = runner.load(path)
    if reporter is not None:
        reporter.width = max((len(n) for n in runbook.steps), default=0)
        reporter.runbook = runbook
    if detach:
        if runner.remote_executor() is None or dry_run:
            raise UsageError("--detach needs an executor that runs elsewhere (temporal://...)")
        result = drive(lambda: runner.arun(runbook, detach=True))
        if as_json:
            click.echo(json_document("run", result.to_dict()))
        else:
            click.echo(f"run {result.run_id} started on {runner.executor}; it goes on by itself")
            click.echo(
                f"  follow: runbook resume {result.run_id}    state: runbook show {result.run_id}"
            )
        sys.exit(0)
    result = drive(lambda: runner.arun(runbook), activity)
    if not (as_json or dry_run or yes) and interactive():
        result = prompt_gates(runner, result)
    finish(result, as_json, junitxml)


def interactive() -> bool:
    """A person at a terminal (both ends): then a gate may be approved right here."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def prompt_gates(runner: Any, result: RunResult) -> RunResult:
    """DESIGN 3 and 11: in an interactive terminal, ask instead of only pausing.

    The question is only put to someone who could approve (``decisions.can_approve``: four
    eyes, approver lists and groups, a signing key in a ``signers`` env), and the answer goes
    through ``runner.approve``, exactly as ``runbook approve`` does, refusals audited.
    """
    from runbook.decisions import can_approve, gate_status
    from runbook.errors import ApprovalError
    from runbook.identity import same

    while result.status == "paused":
        waiting = [n for n, s in result.steps.items() if s.status == "awaiting_approval"]
        for step in waiting:
            actor, why_not = can_approve(
                runner.durable, result.run_id, step, runner.resolved_actor()
            )
            own = same(actor, result.actor)  # one person however spelled (runbook.identity)
            if why_not is None and not runner.protection.allow_yes and own:
                # The prompt is an interactive --yes: where --yes is refused (strict), the one
                # running the change does not approve it in passing. `runbook approve` remains.
                why_not = f"env {result.env!r} refuses approving your own run at the prompt"
            if why_not:
                click.echo(f"not asking to approve {step!r} here: {why_not}", err=True)
                return result
            question = f"Approve {step!r} of run {result.run_id} as {actor}?"
            if not click.confirm(question, default=False):
                return result
            try:
                runner.approve(
                    result.run_id,
                    step=step,
                    actor=actor,
                    comment="approved at the prompt",
                )  # in a signers env, approve signs with RUNBOOK_SIGNING_KEY
            except ApprovalError as exc:
                click.echo(f"not approved: {exc}", err=True)
                return result
        record = runner.store.get_run(result.run_id)
        if record.status != "paused":
            return result
        rb = runner.load(result.runbook)
        if not all(gate_status(runner.durable, record, rb, n)[0] for n in waiting):
            return result  # more approvers needed (min > 1, groups): resume would pause again
        result = drive(functools.partial(runner.aresume, result.run_id))
    return result


COMMANDS = [exec_cmd]
