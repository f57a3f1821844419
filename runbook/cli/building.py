"""How every CLI command that opens the run store builds its Runner, and what it registers.

Cut from ``runbook.cli.exec_`` so that a command that only reads the store (``runbook runs``)
builds its Runner without importing what drives a run (signals, JUnit, the run graph's views):
``exec_`` imports these from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click

from runbook.hookspecs import hookimpl


class Activity:
    """Which steps are running and whether a rollback has started: what a second Ctrl-C waits for.

    A lifecycle-hook plugin like the reporter, registered for every run the CLI drives (also with
    ``--json``, where there is no reporter), so the message printed is true, not a guess.
    """

    def __init__(self) -> None:
        self.running: dict[str, None] = {}
        self.rolling_back = False

    @hookimpl
    def runbook_step_started(self, step: str) -> None:
        self.running[step] = None

    @hookimpl
    def runbook_step_finished(self, step: str) -> None:
        self.running.pop(step, None)

    @hookimpl
    def runbook_rollback_finished(self, step: str) -> None:
        self.rolling_back = True

    def waiting_for(self) -> str:
        if self.running:
            names = ", ".join(self.running)
            return (
                f"waiting for {names} to stop (a sync step stops at its next clock.sleep() or "
                "when it returns), then rolling back what completed"
            )
        if self.rolling_back:
            return "waiting for the rollback to finish"
        return "rolling back what completed"


def activity_of(runner: Any) -> Activity | None:
    """The ``Activity`` registered on ``runner`` by the CLI, if any."""
    plugins = getattr(getattr(runner, "plugins", None), "pm", None)
    found = [p for p in (plugins.get_plugins() if plugins else ()) if isinstance(p, Activity)]
    return found[0] if found else None


def make_reporter(*, quiet: bool = False, no_color: bool = False, dry_run: bool = False) -> Any:
    """The terminal reporter as the output options ask for it."""
    from runbook.cli.reporter import TerminalReporter

    return TerminalReporter(quiet_steps=dry_run, quiet=quiet, color=False if no_color else None)


def build_runner(
    config: Any,
    *,
    env: str | None = None,
    as_: str | None = None,
    store_url: str | None = None,
    plugins: Iterable[Any] = (),
    **overrides: Any,
) -> Any:
    """A Runner from configuration, the way every CLI command builds one.

    It is closed when the command ends, on every exit path (click closes the command's context
    on success, error and exit): its connection pools (PostgreSQL) are shut while their threads
    and loop still exist, not finalised at interpreter exit."""
    from runbook.config import resolve_actor
    from runbook.runner import Runner

    actor = resolve_actor(as_, cwd=getattr(config, "root", None))
    extra = {k: v for k, v in overrides.items() if v is not None}
    runner = Runner.from_config(
        config, env=env, actor=actor, store=store_url or None, plugins=list(plugins), **extra
    )
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(runner.close)
    return runner
