"""The ``ssh`` resource: ``ssh(host, argv_or_template, timeout=..., **quoted)``, like ``shell``.

* ``ssh(host, ["deployctl", "install", svc])``: each item quoted, so the remote shell sees exactly
  these words (an SSH command is always a string the remote login shell parses).
* ``ssh(host, "deployctl install {svc} | tee log", svc=svc)``: a template, every placeholder
  ``shlex.quote``-d.
* A string that already holds a param or step output with shell metacharacters (an f-string) is
  refused with ``UnsafeCommand`` exactly as ``shell`` refuses it; ``ssh.unsafe(host, "...")``
  opts out and is audited.

The result has ``stdout``, ``stderr``, ``returncode``, ``duration`` (and ``host``); a non-zero exit
raises ``CommandFailed`` with the stderr tail, secrets masked. A host that cannot be reached
raises ``HostUnreachable`` within ``ssh_connect_timeout``, which ``rolling`` reports as
``unreached``. Every command has a timeout: ``timeout=``, capped by what is left of the step's,
else the step's, else ``ssh_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import asyncssh

from runbook import guard, tracing
from runbook.clock import remaining
from runbook.commands import input_bytes, output_text
from runbook.errors import HostUnreachable, RunbookError, StepTimeout
from runbook.resources import SSHResult, remote_command_failed
from runbook_ssh.pool import LoopThread, Pool
from runbook_ssh.settings import Settings


def _quiet_asyncssh() -> None:
    """asyncssh logs every command line at INFO (and env values at DEBUG) verbatim, and a
    command may carry a secret. Unless someone set the ``asyncssh`` logger's level on purpose,
    keep it at WARNING so no command line leaves the process through logging."""
    lg = logging.getLogger("asyncssh")
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.WARNING)


_quiet_asyncssh()


def _env_prefix(env: Mapping[str, str] | None) -> str:
    """``export K='v';`` for each variable: works for any remote shell script, needs no
    ``AcceptEnv`` on the server (which silently drops what it does not accept)."""
    if not env:
        return ""
    parts = []
    for key, value in env.items():
        if not key.isidentifier():
            raise RunbookError(f"ssh env: {key!r} is not a variable name")
        parts.append(f"export {key}={shlex.quote(str(value))};")
    return " ".join(parts) + " "


class SSH:
    """The run's ``ssh`` resource: pooled connections, safe commands, shell's result shape."""

    def __init__(
        self,
        settings: Settings,
        *,
        fleet: Any = None,
        clock: Any = None,
        ctx: Any = None,
    ) -> None:
        self.settings = settings
        self._fleet = fleet
        self._clock = clock
        self._ctx = ctx
        self._loop = LoopThread()
        self.pool = Pool(settings)

    # -- the run it belongs to --------------------------------------------------------------

    def _mask(self, text: str) -> str:
        return guard.mask(self._ctx, text)

    def host(self, host: Any) -> Any:
        if isinstance(host, str):
            if self._fleet is not None:
                return self._fleet.host(host)
            from runbook.inventory import Host

            return Host(host)
        if not hasattr(host, "address"):
            raise RunbookError(f"ssh: expected a host name or Host, got {type(host).__name__}")
        return host

    def _limit(self, timeout: float | None) -> float:
        left = remaining(self._clock) if self._clock is not None else None
        if timeout is None:
            return left if left is not None else self.settings.timeout
        return min(timeout, left) if left is not None else timeout

    # -- running ----------------------------------------------------------------------------

    def _prepare(self, command: Any, values: dict[str, Any]) -> str:
        # An SSH command is one string the remote login shell parses: argv items are joined
        # quoted, template placeholders are quoted (``Command.text``).
        cmd = guard.prepare(
            command, values, ctx=self._ctx, options=guard.SSH_OPTIONS, call="ssh", prefix="host, "
        )
        return cmd.text

    def __call__(
        self,
        host: Any,
        command: str | Sequence[Any],
        /,
        *,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        **values: Any,
    ) -> SSHResult:
        """Run a command on ``host`` (a name or a ``Host``) from a sync step or callback."""
        _refuse_on_a_running_loop()
        target = self.host(host)
        text = self._prepare(command, values)
        limit = self._limit(timeout)
        run = self._run(target, text, check=check, limit=limit, env=env, input=input)
        return self._loop.run(run, timeout=limit + self.settings.connect_timeout + 30)

    async def arun(
        self,
        host: Any,
        command: str | Sequence[Any],
        /,
        *,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        **values: Any,
    ) -> SSHResult:
        """``await ssh.arun(host, ...)`` from an ``async def`` step."""
        target = self.host(host)
        text = self._prepare(command, values)
        limit = self._limit(timeout)
        return await self._loop.arun(
            self._run(target, text, check=check, limit=limit, env=env, input=input)
        )

    def unsafe(
        self, host: Any, command: str, /, *, check: bool = True, timeout: float | None = None
    ) -> SSHResult:
        """Run a string on ``host`` exactly as written: the explicit, audited opt-out."""
        _refuse_on_a_running_loop()
        target = self.host(host)
        text = guard.prepare_unsafe(command, ctx=self._ctx, via="ssh.unsafe", host=target.name).text
        limit = self._limit(timeout)
        run = self._run(target, text, check=check, limit=limit, env=None, input=None)
        return self._loop.run(run, timeout=limit + self.settings.connect_timeout + 30)

    async def _run(
        self,
        host: Any,
        text: str,
        *,
        check: bool,
        limit: float,
        env: Mapping[str, str] | None,
        input: str | None,
    ) -> SSHResult:
        # The step's trace context beats none; an explicit env= beats it (as for ``shell``).
        extra = {**tracing.command_env(), **dict(env or {})}
        wire = _env_prefix(extra) + text
        began = time.monotonic()
        conn, sessions = await self.pool.session(host)
        async with sessions:
            try:
                proc = await conn.create_process(wire, encoding=None)  # bytes: output_text decodes
            except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, OSError) as exc:
                self.pool.forget(host)
                raise HostUnreachable(
                    host.name, f"cannot open a session: {getattr(exc, 'reason', exc)}"
                ) from None
            try:
                stdout, stderr = await asyncio.wait_for(proc.communicate(input_bytes(input)), limit)
            except TimeoutError:
                await _stop(proc)
                raise StepTimeout(
                    self._mask(f"{host.name}: command timed out after {limit:g}s: {text}")
                ) from None
            except (asyncssh.Error, OSError) as exc:
                self.pool.forget(host)
                raise RunbookError(
                    self._mask(
                        f"{host.name}: connection lost during {text}: {getattr(exc, 'reason', exc)}"
                    )
                ) from None
            finally:
                proc.close()
        status = proc.exit_status
        result = SSHResult(
            command=text,
            returncode=status if status is not None and status >= 0 else 255,
            stdout=output_text(stdout or b""),
            stderr=output_text(stderr or b""),
            duration=round(time.monotonic() - began, 6),
            host=host.name,
        )
        if check and result.returncode != 0:
            raise remote_command_failed(result, self._mask)
        return result

    def close(self) -> None:
        try:
            self._loop.run(self.pool.aclose(), timeout=15)
        finally:
            self._loop.stop()


async def _stop(proc: Any) -> None:
    """Kill a command that ran out of time (the ``signal`` request; sshd >= 7.9 honours it
    for sessions without a pty), then close its channel."""
    try:
        proc.send_signal("KILL")
    except Exception:
        pass
    proc.close()


def _refuse_on_a_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RunbookError(
        "ssh(...) blocks; in an async def step use `await ssh.arun(host, ...)` instead"
    )


def ssh_resource(ctx: Any, clock: Any, hosts: Any = None) -> Iterator[SSH]:
    settings = Settings.from_config(getattr(ctx, "config", None))
    resource = SSH(settings, fleet=hosts, clock=clock, ctx=ctx)
    try:
        yield resource
    finally:
        resource.close()
