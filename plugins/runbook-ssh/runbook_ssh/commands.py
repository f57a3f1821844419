"""How an ssh command line is built from argv or a template, and when one is refused.

An SSH command is always one string that the remote login shell parses, so both forms end as a
script: an argv list is joined with each item quoted, a template has each placeholder quoted.
Building, quoting and the f-string trap are ``runbook.commands``'s, shared with ``shell``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("runbook.ssh")


def prepare(
    command: str | Sequence[Any],
    values: dict[str, Any],
    *,
    ctx: Any,
    call: str = "ssh",
    prefix: str = "host, ",
) -> str:
    """The remote script for ``command``; raises ``UnsafeCommand`` for the f-string trap."""
    from runbook import commands

    cmd = commands.build(command, values)
    text = cmd.text  # argv: shlex.join, every item one word; template: placeholders quoted
    if ctx is not None:
        scripts = [command] if isinstance(command, str) else commands.command_scripts(cmd)
        for script in scripts:
            _check(script, text, ctx, call, prefix)
    return text


def prepare_unsafe(command: str, *, ctx: Any, host: str) -> str:
    from runbook import commands

    cmd = commands.build(command, unsafe=True)
    _audit(ctx, {"command": _mask(ctx, cmd.text), "via": "ssh.unsafe", "host": host})
    return cmd.text


def _mask(ctx: Any, text: str) -> str:
    redact = getattr(ctx, "redact", None)
    return redact(text) if redact is not None else text


def _audit(ctx: Any, data: dict[str, Any]) -> None:
    audit = getattr(ctx, "audit", None)
    if audit is not None:
        audit("unsafe_command", data)


def _check(template: str, text: str, ctx: Any, call: str, prefix: str) -> None:
    from runbook import commands

    tainted = commands.tainted_values(ctx.params, getattr(ctx, "outputs", {}) or {})
    hit = commands.find_trap(template, tainted)
    if hit is None:
        return
    error = commands.unsafe_command(
        template, hit, call=call, prefix=prefix, redact=lambda t: _mask(ctx, t)
    )
    if getattr(ctx, "protection", "standard") == "none":
        log.warning("%s", _mask(ctx, f"protection none, running anyway: {error}"))
        _audit(ctx, {"command": _mask(ctx, text), "via": "protection none", "source": hit.source})
        return
    raise error
