"""The built-in resources that come from factories: ``shell``, ``http`` and ``log``.

``ctx``, ``params``, ``env``, ``clock``, ``notify``, ``router`` and ``injector`` are provided by the
engine itself because they are the run's own state. These three are registered through the
``runbook_resources`` hook like a plugin's, so a plugin or a test can replace any of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runbook import commands, guard
from runbook.clock import Clock, remaining
from runbook.errors import CommandError, CommandFailed, ConfigError, StepTimeout
from runbook.failure import record_log
from runbook.hookspecs import hookimpl

if TYPE_CHECKING:
    import httpx

    from runbook.http import Http as Http

log = logging.getLogger("runbook")

DEFAULT_SHELL_TIMEOUT = 600.0  # seconds; ``shell_timeout`` in config overrides it


@dataclass(frozen=True)
class ShellResult:
    """What a command did: ``stdout``/``stderr`` (text), ``returncode``, ``duration`` (seconds)."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        return self.stdout


@dataclass(frozen=True)
class SSHResult(ShellResult):
    """What a remote command did (the ``ssh`` resource and ``FakeSSH``): ``shell``'s fields
    plus the ``host`` it ran on."""

    host: str = ""


def remote_command_failed(
    result: SSHResult, redact: Callable[[str], str] | None = None
) -> CommandFailed:
    """``CommandFailed`` as ``shell`` raises it, its message starting with the host's name."""
    error = CommandFailed(result, redact=redact)
    error.args = (f"{result.host}: {error.args[0]}",)
    return error


class Shell:
    """The ``shell`` resource: runs a command safely, captures its output, raises on failure.

    ``shell(["deployctl", "install", svc])`` runs the argv with no shell;
    ``shell("deployctl install {svc} | tee log", svc=svc)`` runs through ``/bin/sh`` with each
    placeholder quoted. A string that already contains a param or step output with shell
    metacharacters (an f-string) is refused with ``UnsafeCommand`` (``none`` envs: a warning);
    ``shell.unsafe("...")`` runs a string as written and records it in the audit.

    Every command has a timeout: ``timeout=``, capped by what is left of the step's own timeout,
    else the step's, else ``shell_timeout`` (600 s). The whole process group is killed at the
    timeout, so ``sh -c "a | b"`` leaves nothing behind.
    """

    def __init__(
        self,
        clock: Clock,
        default_timeout: float | None = DEFAULT_SHELL_TIMEOUT,
        *,
        ctx: Any = None,
    ) -> None:
        self.clock = clock
        self.default_timeout = default_timeout
        self._ctx = ctx

    # -- the run this shell belongs to ------------------------------------------------------

    def _mask(self, text: str) -> str:
        return guard.mask(self._ctx, text)

    # -- running ----------------------------------------------------------------------------

    def __call__(
        self,
        command: str | Sequence[Any],
        /,
        *,
        check: bool = True,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        env_clear: bool = False,
        input: str | None = None,
        **values: Any,
    ) -> ShellResult:
        cmd = guard.prepare(command, values, ctx=self._ctx, options=guard.SHELL_OPTIONS)
        return self._run(
            cmd, check=check, timeout=timeout, cwd=cwd, env=env, env_clear=env_clear, input=input
        )

    def unsafe(
        self,
        command: str,
        /,
        *,
        check: bool = True,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        env_clear: bool = False,
        input: str | None = None,
    ) -> ShellResult:
        """Run ``command`` through ``/bin/sh`` exactly as written: the explicit, audited opt-out."""
        cmd = guard.prepare_unsafe(command, ctx=self._ctx, via="shell.unsafe")
        return self._run(
            cmd, check=check, timeout=timeout, cwd=cwd, env=env, env_clear=env_clear, input=input
        )

    def _limit(self, timeout: float | None) -> float | None:
        left = remaining(self.clock)
        limit = timeout
        if limit is None:
            limit = left if left is not None else self.default_timeout
        elif left is not None:
            limit = min(limit, left)
        return limit

    def _run(
        self,
        cmd: commands.Command,
        *,
        check: bool,
        timeout: float | None,
        cwd: str | None,
        env: Mapping[str, str] | None,
        env_clear: bool,
        input: str | None,
    ) -> ShellResult:
        limit = self._limit(timeout)
        # The step's trace context beats an inherited one; an explicit env= beats both.
        inherited = {} if env_clear else os.environ
        from runbook import tracing

        environ = {**inherited, **tracing.command_env(), **dict(env or {})}
        began = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd.args(),
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=environ,
                start_new_session=True,  # its own process group: a timeout kills all of it
            )
        except OSError as exc:
            raise CommandError(
                self._mask(f"cannot run {cmd.text}: {exc.strerror or exc}")
            ) from None
        try:
            stdout, stderr = proc.communicate(commands.input_bytes(input), timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise StepTimeout(
                self._mask(f"command timed out after {limit:g}s: {cmd.text}")
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
        result = ShellResult(
            cmd.text,
            proc.returncode,
            commands.output_text(stdout),
            commands.output_text(stderr),
            round(time.monotonic() - began, 6),
        )
        if check and proc.returncode != 0:
            raise CommandFailed(result, redact=self._mask)
        return result


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.communicate(timeout=5)


def shell_resource(clock: Clock, ctx: Any) -> Shell:
    return Shell(clock, _shell_timeout(getattr(ctx, "config", None)), ctx=ctx)


def _shell_timeout(config: Any) -> float:
    value = (getattr(config, "extra", None) or {}).get("shell_timeout", DEFAULT_SHELL_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"shell_timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def __getattr__(name: str) -> Any:
    if name == "Http":  # lives with httpx, imported when a run first asks for ``http``
        from runbook.http import Http

        return Http
    raise AttributeError(f"module 'runbook.resources' has no attribute {name!r}")


def http_resource() -> Iterator[httpx.Client]:
    from runbook import tracing
    from runbook.http import Http as Http

    client = Http(
        timeout=10.0,
        headers={"User-Agent": "runbook"},
        event_hooks={"request": [tracing.add_http_header]},  # traceparent of the step's span
    )
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
        keep = level >= logging.INFO  # kept with the step (``runbook show``) whatever the config
        if not (keep or self.isEnabledFor(level)):
            return
        text = self._redact(str(msg) % args if args else str(msg))
        if keep:
            record_log(logging.getLevelName(level), text)
        if self.isEnabledFor(level):
            super().log(level, text, **kwargs)


def log_resource(ctx: Any) -> RedactingLogger:
    logger = logging.getLogger(f"runbook.run.{ctx.info.name}")
    return RedactingLogger(logger, {"run_id": ctx.run_id, "env": ctx.env}, ctx.redact)


@hookimpl
def runbook_resources() -> dict[str, Any]:
    return {"shell": shell_resource, "http": http_resource, "log": log_resource}


@hookimpl
def runbook_config_keys() -> list[str]:
    return ["shell_timeout"]


@hookimpl
def runbook_configure(config: Any) -> None:
    _shell_timeout(config)  # a bad value is a ConfigError before anything runs
