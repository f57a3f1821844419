"""The terminal reporter: pytest-like output for a run, as an ordinary lifecycle-hook plugin.

It registers on the Runner's plugin manager like any outside plugin would, so everything it shows
is also available to a plugin author. Hooks may be called from the event loop or from worker
threads: each one formats a line and writes it under a lock, nothing slower.

Colour and the single updating progress line are used only when the output is a terminal; a log
file or CI gets plain lines, one per event, and progress at most once per 10% or message change.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from typing import IO, Any

import click

from runbook import stdio
from runbook.cli.planview import render_plan
from runbook.cli.text import (
    ASCII_SYMBOLS,
    LOUD,
    RUN_COLOURS,
    SYMBOLS,
    can_encode,
    color_wanted,
    first_line,
    format_duration,
    label,
    rollback_outcome,
    short_where,
    stopped_because,
    summarize,
)
from runbook.context import CURRENT_STEP
from runbook.failure import STDERR_LINES
from runbook.hookspecs import hookimpl

_DIGITS = re.compile(r"\d+(\.\d+)?")

STEP_LOGGER = "runbook.run"  # the ``log`` resource logs to runbook.run.<runbook name>


class _Forwarder(logging.Handler):
    """Hands each record the ``log`` resource emits to the reporter, with the step that wrote it."""

    def __init__(self, reporter: TerminalReporter) -> None:
        super().__init__(logging.INFO)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reporter.log_line(CURRENT_STEP.get(), record.levelname, record.getMessage())
        except Exception:  # output trouble must never reach the step that logged
            pass


class TerminalReporter:
    """Writes the header, one line per finished step or rollback, progress and the summary.

    ``color``/``tty`` default to whether ``out`` is a terminal. ``names`` (the runbook's step names)
    only lets the step column line up from the first line on.
    """

    def __init__(
        self,
        out: IO[str] | None = None,
        *,
        color: bool | None = None,
        tty: bool | None = None,
        names: list[str] | None = None,
        quiet_steps: bool = False,
        runbook: Any = None,
        quiet: bool = False,
        annotate: bool | None = None,
    ) -> None:
        self.out = out if out is not None else sys.stdout
        isatty = bool(getattr(self.out, "isatty", lambda: False)())
        self.tty = isatty if tty is None else tty
        self.color = color_wanted(self.out) if color is None else color
        self.ascii = not can_encode(self.out)
        # --quiet: the summary, failures and what to do next; no step or progress lines.
        self.quiet = quiet
        self.closed = False  # the reader went away (``| head``): stop writing, keep running
        # Under GitHub Actions a failed step is also an ``::error`` annotation on its file.
        self.annotate = os.environ.get("GITHUB_ACTIONS") == "true" if annotate is None else annotate
        if names is None and runbook is not None:
            names = list(runbook.steps)
        self.width = max((len(n) for n in names or ()), default=0)
        # With the collected runbook, a dry run ends with the plan (levels, gates, locks).
        self.runbook = runbook
        # In a dry run the plan printed at the end says it all; per-step lines would repeat it.
        self.quiet_steps = quiet_steps
        self.run: Any = None
        self._lock = threading.Lock()
        self._log_handler: logging.Handler | None = None
        self._log_saved: tuple[int, bool] = (logging.NOTSET, True)
        self._progress_line = False  # an updating line is on screen (TTY only)
        self._last_progress: dict[str | None, tuple[str, int | None]] = {}
        self._started = time.monotonic()

    # -- output primitives --------------------------------------------------------------------

    def _style(self, text: str, fg: str | None = None, bold: bool = False) -> str:
        if not self.color or (fg is None and not bold):
            return text
        return click.style(text, fg=fg, bold=bold)

    def _write(self, line: str) -> None:
        with self._lock:
            if self.closed:
                return
            try:
                if self._progress_line:
                    # Clear the updating progress line before a normal line takes its place.
                    self.out.write("\r\x1b[2K")
                    self._progress_line = False
                self.out.write(self._encodable(line) + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                self._reader_gone()

    def _encodable(self, text: str) -> str:
        if not self.ascii:
            return text
        for symbol, plain in ASCII_SYMBOLS.items():
            text = text.replace(symbol, plain)
        encoding = getattr(self.out, "encoding", None) or "ascii"
        return text.encode(encoding, "replace").decode(encoding)

    def _reader_gone(self) -> None:
        """``runbook exec ... | head``: the run goes on (it is recorded); the output stops.

        Point the descriptor at /dev/null so the interpreter's last flush does not print a
        ``BrokenPipeError`` either.
        """
        self.closed = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)

    def _step_line(self, symbol_status: str, step: str, detail: str = "") -> str:
        symbol, fg = SYMBOLS.get(symbol_status, ("·", None))
        name = step.ljust(self.width) if detail else step
        text = f"{self._style(symbol, fg, bold=True)} {name}"
        return f"{text}  {detail}" if detail else text

    # -- lifecycle hooks ----------------------------------------------------------------------

    # -- what steps log through the ``log`` resource ------------------------------------------

    def log_line(self, step: str | None, level: str, message: str) -> None:
        if self.quiet or self.quiet_steps:
            return
        shown = f"{step}: " if step else ""
        if level != "INFO":
            shown += f"{level} "
        fg = "yellow" if level == "WARNING" else ("red" if level in ("ERROR", "CRITICAL") else None)
        for i, line in enumerate(str(message).splitlines() or [""]):
            self._write(self._style(f"  │ {shown if i == 0 else ''}{line}", fg or "bright_black"))

    def _forward_logs(self, on: bool) -> None:
        """While a run is reported, ``log.info(...)`` lines show, named by their step."""
        logger = logging.getLogger(STEP_LOGGER)
        if on and self._log_handler is None:
            self._log_handler = _Forwarder(self)
            self._log_saved = (logger.level, logger.propagate)
            logger.addHandler(self._log_handler)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            logger.propagate = False  # shown here; not a second time by logging's last resort
        elif not on and self._log_handler is not None:
            logger.removeHandler(self._log_handler)
            logger.setLevel(self._log_saved[0])
            logger.propagate = self._log_saved[1]
            self._log_handler = None

    @hookimpl
    def runbook_run_started(self, run: Any) -> None:
        self._forward_logs(True)
        self.run = run
        self._started = time.monotonic()
        parts = [
            f"runbook {run.runbook}",
            f"env {run.env}",
            f"actor {run.actor}",
            f"run {run.run_id}",
        ]
        if getattr(run, "resumed", False):
            parts.append("resumed")
        if getattr(run, "dry_run", False):
            parts.append("DRY RUN")
        if getattr(run, "identity", "") == "signed":
            parts.append("signed approvals")
        elif getattr(run, "identity", "") == "claimed":
            parts.append("identities claimed, not proven")
        self._write(self._style(" · ".join(parts), bold=True))

    @hookimpl
    def runbook_step_started(self, run: Any, step: str, attempt: int) -> None:
        if attempt > 1 and not (self.quiet_steps or self.quiet):
            self._write(self._step_line("running", step, f"retrying (attempt {attempt})"))

    @hookimpl
    def runbook_step_finished(self, run: Any, step: str, result: Any) -> None:
        status = result.status
        if self.quiet_steps or (self.quiet and status not in LOUD):
            return
        if status == "succeeded":
            detail = format_duration(result.duration)
            if result.attempts and result.attempts > 1:
                detail += f" (attempt {result.attempts})"
        elif status == "skipped":
            detail = f"skipped ({result.reason})" if result.reason else "skipped"
        elif status == "awaiting_approval":
            detail = "awaiting approval"
        elif status == "failed":
            detail = first_line(result.error) or "failed"
            self._write(self._step_line(status, step, detail))
            self._why(step, result)
            return
        elif status == "denied":
            detail = f"denied: {first_line(result.reason or result.error)}".rstrip(": ")
        else:
            reason = first_line(result.reason or result.error)
            detail = label(status) + (f" ({reason})" if reason and reason != status else "")
        self._write(self._step_line(status, step, detail))

    def _why(self, step: str, result: Any) -> None:
        """Under a failed step: its line in the runbook and a failed command's stderr tail."""
        where = getattr(result, "where", None)
        pad = "    "
        if where:
            self._write(f"{pad}at {short_where(where)}")
        stderr = getattr(result, "stderr", None)
        if stderr:
            self._write(f"{pad}stderr (last lines):")
            for line in str(stderr).splitlines()[-STDERR_LINES:]:
                self._write(self._style(f"{pad}│ {line}", "bright_black"))
        if self.annotate:
            self._annotate(step, result)

    def _annotate(self, step: str, result: Any) -> None:
        """GitHub Actions: ``::error file=...,line=...::`` so the failure shows on the diff."""
        where = getattr(result, "where", None)
        props = [f"title={_escape_property(f'step {step} failed')}"]
        if where:
            file, _, line = str(where).rpartition(":")
            with contextlib.suppress(ValueError):
                file = os.path.relpath(file, os.environ.get("GITHUB_WORKSPACE") or os.getcwd())
            props[:0] = [f"file={_escape_property(file)}", f"line={line}"]
        message = str(result.error or result.rollback_error or result.status)
        stderr = getattr(result, "stderr", None)
        if stderr and str(stderr) not in message:
            message += "\n" + str(stderr)
        self._write(f"::error {','.join(props)}::{_escape_data(message)}")

    @hookimpl
    def runbook_rollback_finished(self, run: Any, step: str, result: Any) -> None:
        # DESIGN 10: a failed step keeps ``failed``; its own rollback's outcome is ``rollback``.
        outcome = rollback_outcome(result)
        if outcome == "rolled_back" and self.quiet:
            return
        if outcome == "rolled_back":
            self._write(self._step_line("rolled_back", step, "rolled back"))
        else:
            error = first_line(result.rollback_error or result.error)
            self._write(self._step_line("rollback_failed", step, f"rollback failed: {error}"))
            if "NoneType" in error and result.output is None:
                self._write(
                    f"    {step} had no output (it failed itself), so its rollback received None:"
                    " see docs/runbooks.md, Rollbacks"
                )
            if self.annotate:
                self._annotate(step, result)

    @hookimpl
    def runbook_progress(
        self, run: Any, step: str | None, message: str, fraction: float | None
    ) -> None:
        if self.quiet or self.closed:
            return
        percent = None if fraction is None else max(0, min(100, int(fraction * 100)))
        prefix = f"{step}: " if step else ""
        shown = f"  … {prefix}{message}" + (f" ({percent}%)" if percent is not None else "")
        if self.tty:
            # One line that rewrites itself; cut to the terminal's width, or it would wrap and
            # the carriage return could only clear its last row.
            shown = shown[: max(20, stdio.terminal_columns() - 1)]
            with self._lock:
                try:
                    self.out.write(
                        "\r\x1b[2K" + self._encodable(self._style(shown, "bright_black"))
                    )
                    self.out.flush()
                    self._progress_line = True
                except (BrokenPipeError, ValueError):
                    self._reader_gone()
            return
        # Not a terminal: a line only when the 10% bucket or the message's words change, so a
        # poll loop reporting "attempt 3/40" every second does not flood a CI log.
        key = (_DIGITS.sub("#", message), None if percent is None else percent // 10)
        with self._lock:
            if self._last_progress.get(step) == key:
                return
            self._last_progress[step] = key
        self._write(shown)

    @hookimpl
    def runbook_run_finished(self, run: Any, result: Any) -> None:
        self._forward_logs(False)
        duration = result.duration
        if duration is None:
            duration = time.monotonic() - self._started
        status = result.status
        counts = result.counts()
        if not result.dry_run and status != "paused" and counts.get("running"):
            # The run is over: a step still "running" was cut off by a stop (audit, store).
            counts["interrupted"] = counts.pop("running")
        summary = f"{summarize(counts)} in {format_duration(duration)}"
        if result.dry_run:
            summary += "; nothing was changed"
        if result.dry_run and self.runbook is not None:
            for line in render_plan(self.runbook, result, self.run, self._style):
                self._write(line)
        head = "dry run" if result.dry_run else f"run {label(status)}"
        self._write(self._style(f"{head}: {summary}", RUN_COLOURS.get(status), bold=True))
        hosts = getattr(result, "hosts", None)
        if hosts and not result.dry_run:
            from runbook.fleet import RETRY_STATUSES, hosts_line

            self._write(hosts_line(hosts))
            if status == "succeeded" and any(s in RETRY_STATUSES for s in hosts.values()):
                self._write(f"  retry the failed hosts: runbook retry {result.run_id}")
        if status == "paused":
            self._paused(result)
        elif status == "rollback_failed":
            self._rollback_failed(result)
        elif status in ("failed", "rolled_back") and result.error:
            self._write(f"error: {first_line(result.error)}")
            if why := stopped_because(result.error):
                self._write(why)

    def _paused(self, result: Any) -> None:
        waiting = [n for n, s in result.steps.items() if s.status == "awaiting_approval"]
        self._write(f"paused: waiting for approval of {', '.join(waiting) or 'a step'}")
        for name in waiting:
            self._write(f"  runbook approve {result.run_id} --step {name}")
        self._write(f"  runbook resume {result.run_id}")

    def _rollback_failed(self, result: Any) -> None:
        failed = [s for s in result.steps.values() if rollback_outcome(s) == "rollback_failed"]
        self._write(
            self._style("!! ROLLBACK FAILED: MANUAL INTERVENTION NEEDED !!", "red", bold=True)
        )
        for step in failed:
            why = first_line(step.rollback_error or step.error) or "no detail"
            self._write(self._style(f"  {step.name}: {why}", "red"))
        self._write(f"  inspect: runbook show {result.run_id}")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
