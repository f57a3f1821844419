"""The ``runbook`` command line. Each command group lives in its own module, registered here."""

from __future__ import annotations

import importlib

import click

from runbook import __version__

# Modules that define ``COMMANDS``: a list of click commands or groups.
COMMAND_MODULES = (
    "runbook.cli.exec_",
    "runbook.cli.inspect",
    "runbook.cli.runs",
    "runbook.cli.decide",
    "runbook.cli.audit",
    "runbook.cli.locks",
    "runbook.cli.notify",
    "runbook.cli.retry",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="runbook")
def cli() -> None:
    """Run safety-critical operations written as plain Python step functions."""


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)
    # Plugins may add commands too (runbook_cli_commands hook).
    from runbook.plugins import Plugins

    try:
        Plugins().hook.runbook_cli_commands(group=cli)
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
