"""What every CLI command shares: error handling with documented exit codes, config and stores."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from runbook.errors import EXIT_INTERRUPTED, RunbookError, exit_code

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> None:
    """One clear line on stderr and the documented exit code; never a traceback."""
    click.echo(f"runbook: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn runbook's exceptions into one line and their exit code.

    Set ``RUNBOOK_DEBUG=1`` to get the traceback as well, for bug reports.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RunbookError as exc:
            if os.environ.get("RUNBOOK_DEBUG"):
                raise
            fail(str(exc), exit_code(exc))
        except KeyboardInterrupt:
            click.echo("runbook: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def store_option(func: F) -> F:
    """``--store URL``: the run store (default: config ``store``, else ``$RUNBOOK_STORE``...)."""
    return click.option(
        "--store",
        "store_url",
        envvar="RUNBOOK_STORE",
        metavar="URL",
        help="Run store URL (default from [tool.runbook] store, else .runbook/runbook.db).",
    )(func)


def config_option(func: F) -> F:
    """``--config FILE``: use this pyproject.toml/runbook.toml instead of searching upwards."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="RUNBOOK_CONFIG",
        help="Configuration file (default: runbook.toml or pyproject.toml found upwards).",
    )(func)


def load_config(start: Path | None = None, config_path: Path | None = None) -> Any:
    """The project configuration, searched from ``start`` (a runbook's folder, else the cwd)."""
    from runbook.config import listed_plugins
    from runbook.config import load_config as _load
    from runbook.plugins import Plugins, configure

    start = start or Path.cwd()
    plugins = Plugins(listed_plugins(start, explicit=config_path))
    keys = [k for ks in plugins.hook.runbook_config_keys() for k in (ks or [])]
    config = _load(start, explicit=config_path, extra_keys=keys)
    configure(plugins, config)
    return config
