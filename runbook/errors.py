"""Every exception runbook raises, in one hierarchy.

Each error that can end a CLI command carries the exit code DESIGN.md assigns to it, so the CLI maps
exceptions to exit codes in one place (``exit_code``) instead of sprinkling ``sys.exit`` around.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Exit codes of the public contract (DESIGN.md section 2).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PAUSED = 3
EXIT_ROLLBACK_FAILED = 4
EXIT_LOCKED = 5
EXIT_INTERRUPTED = 130


class RunbookError(Exception):
    """Base class: anything runbook raises on purpose."""

    exit_code = EXIT_FAILED


class UsageError(RunbookError):
    """The user asked for something that cannot be done; nothing ran."""

    exit_code = EXIT_USAGE


class DefinitionError(UsageError):
    """A runbook (or runbookconf.py) is malformed: found at collection, before anything runs."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        self.message = message
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")


class ParamError(UsageError):
    """One or more ``-p`` values are unknown, missing, of the wrong type or out of choices."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class ConfigError(UsageError):
    """A configuration key or value is wrong; the message names the key and the file."""


class InventoryError(UsageError):
    """An inventory file, a host selection or a ``--limit`` is wrong; the message names it."""


class PluginError(UsageError):
    """A plugin could not be loaded, or no plugin serves a URL scheme."""


class WeightsError(UsageError, ValueError):
    """Traffic weights a router refuses (not integers >= 0 summing to 100, an empty target name):
    refused before any traffic moves. Also a ``ValueError``, which is what a router raised
    before, so code that catches that still does."""


class StoreError(RunbookError):
    """The run store cannot be read or written. The run stops before its next side effect."""


class StoreCorrupt(StoreError):
    """The store file or a row in it is not what runbook wrote. Nothing is modified."""

    exit_code = EXIT_USAGE


class RunNotFound(UsageError):
    """No run with that id in the store."""


class AuditError(RunbookError):
    """An audit sink failed to take an event; audit is a safety property, so the run stops."""


class AuditTampered(RunbookError):
    """``audit verify`` found an event that was edited, removed, inserted or reordered."""

    def __init__(self, message: str, *, seq: int | None = None):
        self.seq = seq
        super().__init__(message)


class LockError(RunbookError):
    """A lock provider failed (not: the lock is held, see ``LockHeld``)."""


class LockHeld(LockError):
    """Another run holds the lock; the message names the holder, its actor and since when."""

    exit_code = EXIT_LOCKED

    def __init__(
        self,
        name: str,
        holder: str | None = None,
        actor: str | None = None,
        since: str | None = None,
        holder_status: str | None = None,
    ):
        self.name = name
        self.holder = holder
        self.actor = actor
        self.since = since
        self.holder_status = holder_status  # the holder run's status, when the store knows it
        who = f" by run {holder}" if holder else ""
        if actor:
            who += f" ({actor})"
        if since:
            who += f" since {since}"
        if holder and holder_status == "paused":
            # A paused run keeps its run lock for ``paused_lease``: say so, and how to free it.
            who += (
                f"; that run is paused, waiting for approval: `runbook cancel {holder}` "
                "releases the lock (or approve and resume it)"
            )
        elif holder and holder_status:
            who += f" (run {holder_status.replace('_', ' ')})"
        super().__init__(f"lock {name!r} is held{who}")


class LeaseLost(LockError):
    """The lock's lease could not be renewed: the holder is no longer protected."""


class ApprovalError(UsageError):
    """An approval was refused: self-approval, an approver not on the list, a step not waiting."""


class StepTimeout(TimeoutError):
    """A step ran past its ``timeout``. A TimeoutError so user code catching that also sees it."""


class StepAborted(RunbookError):
    """A step raised ``SystemExit`` (``sys.exit``) or ``KeyboardInterrupt`` itself.

    That is a failure of the step, with its own message, never an exit of runbook: a step's
    ``sys.exit(0)`` must not make ``exec`` report success.
    """


class StepFailed(RunbookError):
    """Raised by strategies and helpers to fail a step with a message rather than a traceback."""


class RollbackHalted(StepFailed):
    """A rollback found the system in a state where undoing more would make things worse (a canary
    still taking traffic after its abort): the remaining rollbacks must not run."""


class HostUnreachable(RunbookError):
    """No session could be opened on a host: refused, timed out, unknown host key, no auth.

    The host is reported ``unreached`` (not ``failed``): nothing ran there, and ``runbook retry``
    picks it up again.
    """

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"{host}: {reason}")


class Ambiguous(RunbookError):
    """A probe could not tell: it timed out or saw something unexpected. Never read as healthy."""


class MetricsError(RunbookError):
    """Run metrics did not reach their target; reported as a warning, never fails the run."""


class NotificationError(RunbookError):
    """A notifier could not deliver. Never fails a run; recorded as ``notification_failed``."""


class CommandError(RunbookError):
    """A command could not be built: a bad template, a placeholder without a value."""


class UnsafeCommand(CommandError):
    """A shell command string contains a run value verbatim that the shell would read as code.

    The message names where the value came from (a param, a step output) and the safe form.
    """

    def __init__(self, message: str, *, source: str = "", safe_form: str = ""):
        self.source = source
        self.safe_form = safe_form
        super().__init__(message)


class CommandFailed(CommandError):
    """A command exited non-zero. ``command`` is masked; ``stderr_tail`` is its last lines.

    ``result`` is the ``ShellResult`` (or any object with ``command``, ``returncode``,
    ``stdout``, ``stderr``: the ``ssh`` resource raises this too). ``redact`` masks the run's
    secrets out of everything kept here, because this message is printed and stored.
    """

    TAIL_LINES = 20

    def __init__(self, result: Any, *, redact: Callable[[str], str] | None = None):
        mask = redact or (lambda text: text)
        self.result = result
        self.returncode: int = result.returncode
        self.command: str = mask(str(result.command))
        self.stderr_tail: str = _masked_tail(result.stderr or "", self.TAIL_LINES, mask)
        self.stdout_tail: str = _masked_tail(result.stdout or "", self.TAIL_LINES, mask)
        tail = self.stderr_tail or self.stdout_tail
        super().__init__(
            f"command exited {self.returncode}: {self.command}" + (f"\n{tail}" if tail else "")
        )


_TAIL_CHARS = 4000  # at most this much of a failed command's output is kept


def _tail(text: str, lines: int, limit: int = _TAIL_CHARS) -> str:
    """The last ``lines`` non-empty-trailing lines, at most ``limit`` characters."""
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept)[-limit:]


_MASKED_WINDOW = 1 << 20  # characters of output masked before its tail is cut


def _masked_tail(text: str, lines: int, mask: Callable[[str], str]) -> str:
    """``_tail`` of the masked text: masked first, since a cut can fall inside a secret and
    leave a part that no longer masks. Only the end is masked (output can be gigabytes), far
    more than the tail, so a secret the window's start cuts is never in what is kept; unless
    masking shrank the window to the tail itself, and then all of it is masked."""
    window = text[-_MASKED_WINDOW:]
    masked = mask(window)
    if len(window) < len(text) and len(masked) <= 2 * _TAIL_CHARS:
        masked = mask(text)
    return _tail(masked, lines)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions an exception group holds, however nested (``asyncio.TaskGroup``, httpx,
    anyio raise them), or ``[exc]``: what to tell an operator, since "unhandled errors in a
    TaskGroup (1 sub-exception)" says nothing they can act on."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    found: list[BaseException] = []
    for inner in exc.exceptions:
        found.extend(leaves(inner))
    return found or [exc]


def exit_code(exc: BaseException) -> int:
    """Map any exception to its documented CLI exit code."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return getattr(exc, "exit_code", EXIT_FAILED)
