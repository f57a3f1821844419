"""The one path every command takes before it runs: ``shell``, ``ssh`` and their fakes.

``runbook.commands`` decides (how a command is built, what the f-string trap looks like); this
module applies those decisions to one run: it reads the run's params and outputs from ``ctx``,
refuses the trap (or, under protection ``none``, warns and records it), and records every
``.unsafe(...)`` opt-out in the audit. The real resources and the test fakes both call it, so a
command ``pytest --runbooks`` accepts offline is exactly a command production accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from runbook import commands
from runbook.errors import CommandError

log = logging.getLogger("runbook")

#: Keyword options of ``shell(...)`` and ``ssh(...)``: a placeholder cannot share a name with one.
SHELL_OPTIONS = frozenset({"check", "timeout", "cwd", "env", "env_clear", "input"})
SSH_OPTIONS = frozenset({"check", "timeout", "env", "input"})


def prepare(
    command: str | Sequence[Any],
    values: dict[str, Any],
    *,
    ctx: Any,
    options: frozenset[str] = frozenset(),
    call: str = "shell",
    prefix: str = "",
) -> commands.Command:
    """The command to run, or ``UnsafeCommand`` / ``CommandError`` before anything runs.

    ``options`` are the keyword arguments of the calling resource (``check``, ``timeout``...): a
    template placeholder named like one could never be filled, so it is refused with the rename
    to use. ``call`` and ``prefix`` shape the safe form the refusal suggests
    (``ssh(host, ...)``). Without a ``ctx`` (a resource used outside a run) there is nothing
    tainted to look for.
    """
    if isinstance(command, str):
        clash = sorted(set(commands.placeholders(command)) & options)
        if clash:
            name = clash[0]
            raise CommandError(
                f"placeholder {{{name}}} is also an option of {call}(); name it differently: "
                f'{call}({prefix}"... {{{name}_}}", {name}_=...)'
            )
    cmd = commands.build(command, values)
    if ctx is not None:
        scripts = [command] if isinstance(command, str) else commands.command_scripts(cmd)
        for script in scripts:
            if _refused(script, cmd, ctx, call, prefix):
                break
    return cmd


def prepare_unsafe(command: str, *, ctx: Any, via: str, **detail: Any) -> commands.Command:
    """A string run exactly as written: the explicit opt-out, always recorded in the audit."""
    cmd = commands.build(command, unsafe=True)
    _audit(ctx, {"command": mask(ctx, cmd.text), "via": via, **detail})
    return cmd


def mask(ctx: Any, text: str) -> str:
    """``text`` with the run's secrets masked (unchanged outside a run)."""
    redact = getattr(ctx, "redact", None)
    return redact(text) if redact is not None else text


def _audit(ctx: Any, data: dict[str, Any]) -> None:
    audit = getattr(ctx, "audit", None)
    if audit is not None:
        audit("unsafe_command", data)


def _refused(script: str, cmd: commands.Command, ctx: Any, call: str, prefix: str) -> bool:
    """Raise for the trap in ``script``; under protection ``none`` warn, audit, and say so."""
    params = getattr(ctx, "params", None) or {}
    tainted = commands.tainted_values(params, getattr(ctx, "outputs", None) or {})
    hit = commands.find_trap(script, tainted)
    if hit is None:
        return False
    error = commands.unsafe_command(
        script, hit, call=call, prefix=prefix, redact=lambda t: mask(ctx, t)
    )
    if getattr(ctx, "protection", "standard") != "none":
        raise error
    log.warning("%s", mask(ctx, f"protection none, running anyway: {error}"))
    _audit(ctx, {"command": mask(ctx, cmd.text), "via": "protection none", "source": hit.source})
    return True
