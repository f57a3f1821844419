"""The one path every command takes before it runs: ``shell``, ``ssh`` and their fakes.

``runbook.commands`` decides (how a command is built, what the f-string trap looks like); this
module applies those decisions to one run: it reads the run's params and outputs from ``ctx``,
refuses the trap (or, under protection ``none``, warns and records it), and records every
``.unsafe(...)`` opt-out in the audit. The real resources and the test fakes both call it, so a
command ``pytest --runbooks`` accepts offline is exactly a command production accepts.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
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
    hit = _run_values(ctx).find(script)
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


class _RunValues:
    """One run's ``TrapIndex``: each param and each step's output is walked once, when the first
    command after it is checked, instead of every value at every command."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.params: Any = None
        self.seen: dict[str, Any] = {}  # step -> the output object indexed
        self.index = commands.TrapIndex()

    def update(self, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> commands.TrapIndex:
        with self.lock:
            stale = params is not self.params or len(outputs) < len(self.seen)
            if not stale:
                stale = any(
                    step in outputs and outputs[step] is not output
                    for step, output in self.seen.items()
                )
            if stale:  # a new run's params, or an output replaced: start again
                self.params, self.seen, self.index = params, {}, commands.TrapIndex()
                for name, value in params.items():
                    self.index.add(commands.param_values(name, value))
            for step, output in list(outputs.items()):
                if step not in self.seen:
                    self.index.add(commands.output_values(step, output))
                    self.seen[step] = output
            return self.index


_RUNS: weakref.WeakKeyDictionary[Any, _RunValues] = weakref.WeakKeyDictionary()
_RUNS_LOCK = threading.Lock()


def _run_values(ctx: Any) -> commands.TrapIndex:
    """The trap index of ``ctx``'s run, brought up to date with the outputs so far."""
    params = getattr(ctx, "params", None) or {}
    outputs = getattr(ctx, "outputs", None) or {}
    try:
        with _RUNS_LOCK:
            state = _RUNS.get(ctx)
            if state is None:
                state = _RUNS[ctx] = _RunValues()
    except TypeError:  # a ctx that cannot be weakly referenced (a test's stand-in): no cache
        state = _RunValues()
    return state.update(params, outputs)
