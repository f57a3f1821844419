"""The built-in resources that come from factories: ``shell``, ``http`` and ``log``.

``ctx``, ``params``, ``env``, ``clock``, ``notify``, ``router`` and ``injector`` are provided by the
engine itself because they are the run's own state. These three are registered through the
``runbook_resources`` hook like a plugin's, so a plugin or a test can replace any of them.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from runbook.clock import Clock, remaining
from runbook.errors import RunbookError, StepTimeout
from runbook.hookspecs import hookimpl

_TAIL = 2000


@dataclass(frozen=True)
class ShellResult:
    command: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        return self.stdout


class CommandFailed(RunbookError):
    """A shell command exited non-zero; the message carries the tail of its output."""

    def __init__(self, result: ShellResult):
        self.result = result
        tail = (result.stderr or result.stdout).strip()[-_TAIL:]
        super().__init__(
            f"command exited {result.returncode}: {result.command}" + (f"\n{tail}" if tail else "")
        )


class Shell:
    """Runs a command, captures its output, raises ``CommandFailed`` on a non-zero exit.

    A string runs through ``/bin/sh`` (pipes and globs work); a list runs without a shell. The
    timeout is the smaller of ``timeout=`` and what is left of the step's own timeout, and the
    process is killed when it runs out.
    """

    def __init__(self, clock: Clock, default_timeout: float | None = None) -> None:
        self.clock = clock
        self.default_timeout = default_timeout

    def __call__(
        self,
        command: str | Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> ShellResult:
        shown = command if isinstance(command, str) else shlex.join(command)
        limit = timeout if timeout is not None else self.default_timeout
        left = remaining(self.clock)
        if left is not None:
            limit = left if limit is None else min(limit, left)
        try:
            proc = subprocess.run(
                command,
                shell=isinstance(command, str),
                capture_output=True,
                text=True,
                timeout=limit,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                input=input,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StepTimeout(f"command timed out after {limit:g}s: {shown}") from None
        result = ShellResult(shown, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandFailed(result)
        return result


def shell_resource(clock: Clock) -> Shell:
    return Shell(clock)


def http_resource() -> Iterator[httpx.Client]:
    client = httpx.Client(timeout=10.0, headers={"User-Agent": "runbook"})
    try:
        yield client
    finally:
        client.close()


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The ``log`` resource: a logger that masks the run's secrets before anything is emitted.

    Arguments are formatted here, before masking, because a secret usually arrives as an
    argument (``log.info("token %s", token)``), not in the format string.
    """

    def __init__(
        self, logger: logging.Logger, extra: dict[str, Any], redact: Callable[[Any], Any]
    ) -> None:
        super().__init__(logger, extra)
        self._redact = redact

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        super().log(level, self._redact(text), **kwargs)


def log_resource(ctx: Any) -> RedactingLogger:
    logger = logging.getLogger(f"runbook.run.{ctx.info.name}")
    return RedactingLogger(logger, {"run_id": ctx.run_id, "env": ctx.env}, ctx.redact)


@hookimpl
def runbook_resources() -> dict[str, Any]:
    return {"shell": shell_resource, "http": http_resource, "log": log_resource}
