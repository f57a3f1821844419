"""Why a step failed, in the terms an operator reads, and what a step logged.

``describe`` turns an exception into the three things DESIGN 10 puts where the operator looks:
the last frame in the runbook (``deploy.py:42``), a failed command's last 20 lines of stderr,
and the whole traceback for ``runbook show RUN --step S``. Everything is masked by the run's
redactor before it is kept, because all of it is printed and recorded.

``LOG`` collects what a step logs through the ``log`` resource (already masked there), per step
attempt, so it can be shown live and kept with the step's outcome.
"""

from __future__ import annotations

import contextvars
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runbook.values import valid_text

STDERR_LINES = 20
TRACEBACK_CHARS = 8000
LOG_LINES = 200

# The lines the running step logged: ``{"level": "INFO", "message": masked text}``.
LOG: contextvars.ContextVar[list[dict[str, str]] | None] = contextvars.ContextVar(
    "runbook_step_log", default=None
)


@dataclass(frozen=True)
class Failure:
    traceback: str
    where: str | None = None  # "/path/deploy.py:42": the last frame in the runbook's folder
    stderr: str | None = None  # a failed command's last lines of stderr


def describe(exc: BaseException, runbook: str | Path, redact: Callable[[str], str]) -> Failure:
    """The failure of one step attempt, masked."""
    text = valid_text("".join(traceback.format_exception(exc)))
    if len(text) > TRACEBACK_CHARS:  # keep the end: the innermost frames and the message
        text = "…\n" + text[-TRACEBACK_CHARS:]
    return Failure(
        traceback=redact(text),
        where=_where(exc, Path(runbook)),
        stderr=_stderr(exc, redact),
    )


def _where(exc: BaseException, runbook: Path) -> str | None:
    """The innermost frame in the runbook file, else in its folder (a ``runbookconf.py``)."""
    frames = traceback.extract_tb(exc.__traceback__)
    try:
        path = runbook.resolve()
    except OSError:
        path = runbook
    folder = path.parent
    for wanted in (lambda f: f == path, lambda f: folder in f.parents):
        for frame in reversed(frames):
            try:
                file = Path(frame.filename).resolve()
            except (OSError, ValueError):
                continue
            if wanted(file):
                return f"{file}:{frame.lineno}"
    return None


def _stderr(exc: BaseException, redact: Callable[[str], str]) -> str | None:
    """A failed command's stderr tail: its ``stderr_tail``, else its result's stderr."""
    tail = getattr(exc, "stderr_tail", None)
    if tail is None:
        result = getattr(exc, "result", None)
        stderr = getattr(result, "stderr", None)
        if not isinstance(stderr, str):
            return None
        tail = "\n".join(stderr.rstrip().splitlines()[-STDERR_LINES:])
    tail = valid_text(str(tail).rstrip())
    return redact(tail) if tail else None


def record_log(level: str, text: str) -> None:
    """Keep one line the running step logged (bounded: the last ``LOG_LINES``)."""
    lines = LOG.get()
    if lines is None:
        return
    lines.append({"level": level, "message": valid_text(text)})
    if len(lines) > LOG_LINES:
        del lines[: len(lines) - LOG_LINES]
