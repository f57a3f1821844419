"""The ``runbook worker`` command, registered through ``runbook_cli_commands``.

Only click is imported here: the Temporal SDK loads when the command runs, so every other
``runbook`` command starts as fast as without this plugin.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("worker")
@click.option(
    "--executor",
    "executor_url",
    required=True,
    metavar="URL",
    envvar="RUNBOOK_EXECUTOR",
    help="temporal://HOST:PORT?namespace=default",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Task queue to serve (repeatable; default: the URL's queue, runbook).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Step attempts this worker runs at once, per queue.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="RUNBOOK_CONFIG",
    help="Configuration file (default: found upwards from the current folder).",
)
@click.option(
    "--store",
    "store_url",
    envvar="RUNBOOK_STORE",
    metavar="URL",
    help="Run store URL (default from [tool.runbook] store).",
)
def worker_cmd(
    executor_url: str,
    queues: tuple[str, ...],
    concurrency: int,
    config_path: Path | None,
    store_url: str | None,
) -> None:
    """Run Temporal workers for runbook runs until SIGTERM/SIGINT."""
    import asyncio  # here, not at the top: every `runbook` command imports this module

    from runbook.cli.common import fail, load_config
    from runbook.errors import RunbookError, exit_code
    from runbook.runner import Runner

    try:
        from runbook_temporal.url import TemporalURL

        url = TemporalURL.parse(executor_url)
        config = load_config(Path.cwd(), config_path)
        runner = Runner.from_config(config, store=store_url)
        click.get_current_context().call_on_close(runner.close)  # pools shut before exit
        served = ", ".join(queues or [url.queue])

        def ready() -> None:
            click.echo(
                f"runbook worker: serving {served} at {url.address} ({url.namespace})", err=True
            )

        from runbook_temporal.worker import serve

        asyncio.run(
            serve(url, runner, config.root, list(queues), concurrency=concurrency, ready=ready)
        )
    except RunbookError as exc:
        fail(str(exc), exit_code(exc))
