"""The ``runbook`` command line. Each command group lives in its own module, registered here.

A command's module is imported when that command runs (or its own ``--help`` is shown), not when
the CLI starts: ``runbook --help`` shows every command from the summaries below, so it costs
click and this module, not the store, the audit, httpx and the engine. ``cli.commands`` is still
a mapping of every command (the docs test walks it); reading a value imports its module.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import click

from runbook import __version__

# name: (module, attribute, the first paragraph of its help). ``runbook --help`` is made from the
# summaries; tests/cli/test_startup.py checks each against the command itself.
BUILTIN_COMMANDS: dict[str, tuple[str, str, str]] = {
    "exec": ("runbook.cli.exec_", "exec_cmd", "Run the runbook at PATH."),
    "list": (
        "runbook.cli.inspect",
        "list_cmd",
        "Collect a runbook without running it: params, resources, steps with gates and rollbacks.",
    ),
    "graph": (
        "runbook.cli.inspect",
        "graph_cmd",
        "Draw the step DAG: parallel levels, data and ordering edges, gates, probes, rollbacks.",
    ),
    "plugins": (
        "runbook.cli.inspect",
        "plugins_cmd",
        "List loaded plugins, where each comes from, and the hooks it implements.",
    ),
    "runs": ("runbook.cli.runs", "runs", "List runs from the run store, newest first."),
    "show": (
        "runbook.cli.runs",
        "show",
        "Show one run: its steps (status, attempts, timings, outputs) and approvals.",
    ),
    "resume": (
        "runbook.cli.runs",
        "resume",
        "Continue a paused or crashed run from where it stopped; finished steps are not re-run.",
    ),
    "approve": (
        "runbook.cli.decide",
        "approve",
        "Approve the plan a paused run's gate shows. `runbook resume` then continues it.",
    ),
    "deny": (
        "runbook.cli.decide",
        "deny",
        "Deny a paused run's approval: the run ends and what completed is rolled back.",
    ),
    "cancel": (
        "runbook.cli.decide",
        "cancel",
        "Cancel a paused or crashed run, rolling back the steps that completed.",
    ),
    "sweep": (
        "runbook.cli.decide",
        "sweep",
        "Apply every expired approval timeout (`Approval(timeout=...)`); for cron.",
    ),
    "audit": (
        "runbook.cli.audit",
        "audit",
        "Query the audit trail; `runbook audit verify` checks its hash chain.",
    ),
    "locks": (
        "runbook.cli.locks",
        "locks",
        "List held locks: name, holder run id, actor, since, expiry and fencing token.",
    ),
    "notify": ("runbook.cli.notify", "notify", "Notification channels."),
    "retry": (
        "runbook.cli.retry",
        "retry_cmd",
        "Run RUN_ID's runbook again on the hosts that failed or were unreached in it.",
    ),
}

# Modules that define ``COMMANDS``: a list of click commands or groups.
COMMAND_MODULES = tuple(dict.fromkeys(module for module, _, _ in BUILTIN_COMMANDS.values()))


class LazyCommands(MutableMapping[str, click.Command]):
    """The group's commands by name: a built-in one is imported the first time it is read."""

    def __init__(self, lazy: dict[str, tuple[str, str, str]]) -> None:
        self._lazy = dict(lazy)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            if name not in self._lazy:
                raise KeyError(name)
            module, attr, _ = self._lazy[name]
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._lazy.pop(name, None)  # a plugin's command of the same name wins, as before
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._lazy.pop(name, None)
        self._loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._lazy, *self._loaded]))

    def __len__(self) -> int:
        return len(self._lazy.keys() | self._loaded.keys())

    def for_help(self) -> dict[str, click.Command]:
        """Every command, those not imported yet as a stand-in with the same summary."""
        return {
            name: self._loaded.get(name) or click.Command(name, help=self._lazy[name][2])
            for name in self
        }


@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    """A usage error (a bad option or value, a missing argument) as every other error is shown:
    one ``runbook: error:`` line on stderr, naming the command's ``--help``, and exit 2. Click's
    own form is four lines (usage, hint, a blank, the error)."""
    try:
        yield
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"runbook: error: {exc.format_message()}{hint}", err=True)
        raise click.exceptions.Exit(exc.exit_code) from None


class LazyGroup(click.Group):
    """A group whose command list (``--help``) is made without importing its commands."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(BUILTIN_COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = self.commands
        if not isinstance(commands, LazyCommands):
            return super().format_commands(ctx, formatter)
        self.commands = commands.for_help()  # click's own layout, from the summaries
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.commands = commands

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _one_line_usage():  # ``runbook --bogus``, an unknown command
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage():  # a subcommand's options, parsed as it is made
            return super().invoke(ctx)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """A mistyped command names the closest real one, on every supported click (8.2.0
        says only "No such command"; later versions add the suggestion themselves)."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            message = exc.format_message()
            if args and message.startswith("No such command") and "Did you mean" not in message:
                close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=1)
                if close:
                    raise click.UsageError(f"{message} Did you mean {close[0]!r}?", ctx) from None
            raise


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="runbook")
def cli() -> None:
    """Run safety-critical operations written as plain Python step functions."""


def _register() -> None:
    # Plugins may add commands too (runbook_cli_commands hook). Only installed plugins can: the
    # built-in ones add none, so they are not imported for it (they are for a command's run).
    from runbook.plugins import Plugins

    try:
        Plugins(defaults=()).hook.runbook_cli_commands(group=cli)
    except Exception as exc:  # a broken plugin must not take the whole CLI down
        click.echo(f"runbook: warning: plugin CLI commands not loaded: {exc}", err=True)


_register()


# Set by a plugin whose native runtime cannot be torn down by the interpreter (Temporal's client
# threads may abort CPython's finalization): the command then ends with ``os._exit`` once its
# output is flushed, so its documented exit code is what the caller sees.
HARD_EXIT: list[bool] = []


def _quiet_unraisable(unraisable: object) -> None:
    """A library object's ``__del__`` failing during interpreter shutdown (a connection pool
    finalised after its event loop) is not the operator's business: log it, print no traceback."""
    import logging

    logging.getLogger("runbook").debug("ignored at exit: %r", unraisable)


def main() -> None:
    import sys

    from runbook.cli.common import main as run

    sys.unraisablehook = _quiet_unraisable
    try:
        run(cli)
    except SystemExit as exc:
        if not HARD_EXIT:
            raise
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
