"""``runbook retry RUN_ID``: run a finished run again, only on its failed and unreached hosts.

A new run of the same runbook, env and params, limited (``--limit``) to the hosts that failed or
were not reached in RUN_ID, with the same inventory. It is linked to RUN_ID: the stored run has
``options.retry_of`` and its ``run_started`` audit event ``data.retry_of``. Secret params are
never stored, so they come again from their ``env=`` variable or ``-p``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from runbook.cli.building import build_runner
from runbook.cli.common import config_option, handle_errors, load_config, store_option
from runbook.cli.exec_ import check_env, drive, finish, interactive, prompt_gates
from runbook.cli.inspect import plugin_option
from runbook.cli.reporter import TerminalReporter
from runbook.errors import UsageError
from runbook.fleet import HOST_STATUSES, host_states, hosts_line, to_retry
from runbook.params import parse_assignments

_LIVE = ("running", "paused")


def hosts_section(steps: Mapping[str, Any], record: Any) -> list[str]:
    """``runbook show``: each host's outcome and its steps, and the retry hint."""
    states = host_states(steps, finished=record.status not in _LIVE)
    if not states:
        return []
    lines = ["hosts:  " + hosts_line(states)]
    width = max(len(h) for h in states)
    rank = {s: i for i, s in enumerate(HOST_STATUSES)}
    for host, state in sorted(states.items(), key=lambda hs: (rank[hs[1]], hs[0])):
        own = [f"{n.split('.', 1)[1].split('[', 1)[0]} {s.status}" for n, s in steps.items()
               if n.endswith(f"[{host}]")]  # fmt: skip
        lines.append(f"  {host.ljust(width)}  {state.ljust(15)} {', '.join(own)}")
    retry = [h for h in to_retry(steps)]
    if retry and record.status not in _LIVE:
        lines.append(f"retry:  runbook retry {record.run_id}   # {', '.join(retry)}")
    return lines


@click.command("retry")
@click.argument("run_id")
@click.option(
    "-p",
    "--param",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a parameter of the original run (secrets: give them again, or via env).",
)
@click.option("--as", "as_", metavar="ACTOR", help="Who is retrying (default as for exec).")
@click.option(
    "--dry-run", is_flag=True, help="Print the plan for the failed hosts; change nothing."
)
@click.option("--yes", is_flag=True, help="Approve gates as yourself where the env allows it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (the run result).")
@store_option
@config_option
@plugin_option
@handle_errors
def retry_cmd(
    run_id: str,
    assignments: tuple[str, ...],
    as_: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    store_url: str | None,
    config_path: Path | None,
    plugin_modules: tuple[str, ...],
) -> None:
    """Run RUN_ID's runbook again on the hosts that failed or were unreached in it.

    \b
    Exit codes as for exec; 2 when RUN_ID is unknown, still running or paused, or has no
    failed or unreached hosts.
    """
    config = load_config(None, config_path)
    store = build_runner(config, store_url=store_url).store
    if store is None:  # pragma: no cover - the config always names a store
        raise UsageError("no run store configured")
    record = store.get_run(run_id)
    if record.status in _LIVE:
        raise UsageError(
            f"run {run_id} is {record.status}: resume or cancel it before retrying its hosts"
        )
    hosts = to_retry(store.get_steps(run_id))
    if not hosts:
        raise UsageError(f"run {run_id} has no failed or unreached hosts: nothing to retry")
    path = Path(record.runbook_path)
    if not path.is_file():
        raise UsageError(f"run {run_id}: its runbook {path} no longer exists")
    check_env(config, record.env)
    reporter = None if as_json else TerminalReporter(quiet_steps=dry_run)
    runner = build_runner(
        config,
        env=record.env,
        as_=as_,
        store_url=store_url,
        plugins=[*([reporter] if reporter else []), *plugin_modules],
        dry_run=dry_run,
        yes=yes,
        inventory=record.options.get("inventory"),
        limit=hosts,
    )
    runner.run_options = {"retry_of": run_id}
    runbook = runner.load(path)
    params = {
        k: v
        for k, v in record.params.items()
        if k in runbook.params and not runbook.params[k].secret
    }
    params.update(parse_assignments(assignments))
    if reporter is not None:
        reporter.width = max((len(n) for n in runbook.steps), default=0)
        reporter.runbook = runbook
        click.echo(f"retrying run {run_id} on {', '.join(hosts)}")
    result = drive(lambda: runner.arun(runbook, params=params))
    if not (as_json or dry_run or yes) and interactive():
        result = prompt_gates(runner, result)
    finish(result, as_json)


COMMANDS = [retry_cmd]
