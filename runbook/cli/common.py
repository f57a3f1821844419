"""What every CLI command shares: error handling with documented exit codes, config and stores."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from runbook.errors import EXIT_FAILED, EXIT_INTERRUPTED, RunbookError, exit_code

F = TypeVar("F", bound=Callable[..., Any])


def json_document(kind: str, body: dict[str, Any], *, default: Any = str) -> str:
    """Every ``--json`` document: an object whose first key names its shape and version.

    ``"schema": "runbook.<kind>/1"`` lets a script that parses it refuse a shape it does not
    know instead of misreading it; the number changes only when a field changes meaning.
    """
    return json.dumps(
        {"schema": f"runbook.{kind}/1", **body}, indent=2, default=default, ensure_ascii=False
    )


def nothing_stored(url: str | None) -> bool:
    """True when ``url`` is a local file store (``sqlite://``, ``file://``) that does not exist.

    Commands that only read (``runs``, ``show``, ``locks``...) then have nothing to show and must
    not create it: opening the provider would make ``.runbook/`` in whatever folder they ran.
    """
    if not isinstance(url, str) or "://" not in url:
        return False
    scheme, _, rest = url.partition("://")
    rest = rest.split("?", 1)[0]
    if scheme.lower() == "sqlite":
        if not rest.startswith("/") or not rest.strip("/"):
            return False  # malformed: opening it reports the problem properly
        from urllib.parse import unquote

        return not Path(unquote(rest[1:])).expanduser().exists()
    if scheme.lower() == "file":
        return bool(rest) and not Path(rest).expanduser().exists()
    return False


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


def report_options(func: F) -> F:
    """``--quiet``, ``--no-color`` and ``--junitxml PATH``: for the commands that report a run."""
    func = click.option(
        "--junitxml",
        "junitxml",
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="PATH",
        help="Also write the steps as a JUnit XML report (one test case per step), for CI.",
    )(func)
    func = click.option(
        "--no-color",
        "no_color",
        is_flag=True,
        help="No colour even on a terminal (so does a non-empty NO_COLOR variable).",
    )(func)
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="Only the summary, failures and what to do next: no step or progress lines.",
    )(func)


def main(command: click.Command) -> None:
    """Run ``command`` so that output trouble never becomes a traceback.

    An ASCII-only stream (``PYTHONIOENCODING=ascii``, ``LANG=C``) gets escapes for what it cannot
    show; a reader that went away (``runbook runs | head``) ends the command quietly, with the
    descriptor pointed at /dev/null so the interpreter's last flush does not complain either.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(Exception):
                reconfigure(errors="backslashreplace")
    try:
        command(prog_name="runbook")
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(EXIT_FAILED)


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


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
    from runbook.plugins import SETUP_PLUGINS, Plugins, configure

    start = start or Path.cwd()
    plugins = Plugins(listed_plugins(start, explicit=config_path), defaults=SETUP_PLUGINS)
    keys = [k for ks in plugins.hook.runbook_config_keys() for k in (ks or [])]
    config = _load(start, explicit=config_path, extra_keys=keys)
    configure(plugins, config)
    return config
