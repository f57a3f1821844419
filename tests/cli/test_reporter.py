"""The terminal reporter: what a person sees, with and without a terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from runbook.cli.reporter import TerminalReporter
from runbook.cli.text import format_duration, summarize
from runbook.context import RunInfo
from runbook.result import RunResult, StepResult

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUN = RunInfo(
    run_id="r-1",
    runbook="/x/deploy.py",
    name="deploy",
    sha256="0" * 64,
    env="prod",
    actor="alice",
    params={"version": "1.0"},
)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def step(name: str, status: str, **kw: object) -> StepResult:
    return StepResult(name=name, status=status, **kw)  # type: ignore[arg-type]


def result(status: str, *steps: StepResult, seconds: float = 3.4, **kw: object) -> RunResult:
    return RunResult(
        run_id="r-1",
        status=status,
        steps={s.name: s for s in steps},
        started_at=T0,
        finished_at=T0 + timedelta(seconds=seconds),
        **kw,
    )


def test_header_and_step_lines_without_colour_when_not_a_tty():
    out = io.StringIO()
    rep = TerminalReporter(out, names=["stage", "verify", "switch"])
    rep.runbook_run_started(run=RUN)
    rep.runbook_step_finished(
        run=RUN, step="stage", result=step("stage", "succeeded", duration=1.23, attempts=1)
    )
    rep.runbook_step_finished(
        run=RUN, step="verify", result=step("verify", "skipped", reason="when")
    )
    rep.runbook_step_finished(
        run=RUN,
        step="switch",
        result=step(
            "switch", "failed", error="AssertionError: no traffic\nTraceback (most recent...)"
        ),
    )
    rep.runbook_rollback_finished(run=RUN, step="stage", result=step("stage", "rolled_back"))
    lines = out.getvalue().splitlines()
    assert lines == [
        "runbook /x/deploy.py · env prod · actor alice · run r-1",
        "✓ stage   1.2s",
        "↷ verify  skipped (when)",
        "✗ switch  AssertionError: no traffic",
        "↺ stage   rolled back",
    ]
    assert "\x1b[" not in out.getvalue()


def test_colour_only_on_a_tty():
    out = Tty()
    rep = TerminalReporter(out)
    rep.runbook_step_finished(run=RUN, step="a", result=step("a", "succeeded", duration=0.1))
    assert "\x1b[" in out.getvalue()


def test_resumed_run_says_so():
    out = io.StringIO()
    TerminalReporter(out).runbook_run_started(run=RunInfo(**{**RUN.__dict__, "resumed": True}))
    assert out.getvalue().rstrip().endswith("· resumed")


def test_summary_line_counts_in_stable_order():
    out = io.StringIO()
    rep = TerminalReporter(out)
    res = result(
        "rolled_back",
        step("a", "succeeded"),
        step("b", "skipped"),
        step("c", "rolled_back"),
        step("d", "failed", error="x"),
        step("e", "succeeded"),
        error="d: RuntimeError: x",
    )
    rep.runbook_run_finished(run=RUN, result=res)
    lines = out.getvalue().splitlines()
    assert lines[0] == "run rolled back: 2 succeeded, 1 failed, 1 skipped, 1 rolled back in 3.4s"
    assert lines[1] == "error: d: RuntimeError: x"


def test_paused_run_prints_the_commands_to_continue():
    out = io.StringIO()
    res = result("paused", step("prepare", "succeeded"), step("migrate", "awaiting_approval"))
    TerminalReporter(out).runbook_run_finished(run=RUN, result=res)
    text = out.getvalue()
    assert "1 succeeded, 1 awaiting approval" in text
    assert "  runbook approve r-1 --step migrate\n  runbook resume r-1\n" in text


def test_rollback_failed_is_loud_and_names_the_steps():
    out = io.StringIO()
    res = result(
        "rollback_failed",
        step("stage", "rollback_failed", rollback_error="RuntimeError: registry down"),
        step("switch", "failed", error="boom"),
    )
    rep = TerminalReporter(out)
    rep.runbook_rollback_finished(run=RUN, step="stage", result=res.steps["stage"])
    rep.runbook_run_finished(run=RUN, result=res)
    text = out.getvalue()
    assert "✗ stage  rollback failed: RuntimeError: registry down" in text
    assert "MANUAL INTERVENTION NEEDED" in text
    assert "  stage: RuntimeError: registry down" in text
    assert "runbook show r-1" in text


def test_progress_without_a_tty_is_throttled_to_buckets_and_message_changes():
    out = io.StringIO()
    rep = TerminalReporter(out)
    for i in range(100):
        rep.runbook_progress(
            run=RUN, step="bake", message=f"baking ({i} attempts, {i}s)", fraction=i / 100
        )
    rep.runbook_progress(run=RUN, step="bake", message="analysis", fraction=None)
    rep.runbook_progress(run=RUN, step="bake", message="analysis", fraction=None)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # one per 10% bucket, plus the new message once
    assert lines[0] == "  … bake: baking (0 attempts, 0s) (0%)"
    assert lines[-1] == "  … bake: analysis"


def test_progress_on_a_tty_is_one_updating_line_cleared_before_the_next_step():
    out = Tty()
    rep = TerminalReporter(out, color=False)
    rep.runbook_progress(run=RUN, step="bake", message="baking", fraction=0.5)
    rep.runbook_progress(run=RUN, step="bake", message="baking", fraction=0.6)
    rep.runbook_step_finished(run=RUN, step="bake", result=step("bake", "succeeded", duration=300))
    text = out.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("\r\x1b[2K✓ bake  5m00s\n")


def test_retry_attempts_are_reported():
    out = io.StringIO()
    rep = TerminalReporter(out)
    rep.runbook_step_started(run=RUN, step="verify", attempt=1)
    rep.runbook_step_started(run=RUN, step="verify", attempt=2)
    assert out.getvalue() == "… verify  retrying (attempt 2)\n"


def test_helpers():
    assert format_duration(0.04) == "0.0s"
    assert format_duration(75) == "1m15s"
    assert format_duration(7300) == "2h01m"
    assert summarize({}) == "no steps"
    assert summarize({"pending": 2, "succeeded": 1}) == "1 succeeded, 2 not run"


def test_cancelled_and_denied_steps():
    out = io.StringIO()
    rep = TerminalReporter(out)
    rep.runbook_step_finished(
        run=RUN, step="wait", result=step("wait", "cancelled", reason="cancelled")
    )
    rep.runbook_step_finished(
        run=RUN, step="gate", result=step("gate", "denied", reason="approval denied")
    )
    assert out.getvalue().splitlines() == ["⊘ wait  cancelled", "✗ gate  denied: approval denied"]


def test_a_failed_step_whose_own_rollback_ran_stays_failed_in_the_summary():
    """DESIGN 10: ``failed`` with ``rollback = "rolled_back"``; the summary counts the failure."""
    from types import SimpleNamespace

    out = io.StringIO()
    reporter = TerminalReporter(out, names=["plan", "stage", "switch"])
    reporter.runbook_run_started(RUN)
    failed = SimpleNamespace(
        name="switch",
        status="failed",
        rollback="rolled_back",
        rollback_error=None,
        error="RuntimeError: mesh down",
        output=None,
    )
    reporter.runbook_rollback_finished(RUN, "switch", failed)
    assert out.getvalue().splitlines()[-1] == "↺ switch  rolled back"
    run = result(
        "rolled_back",
        step("plan", "succeeded", duration=0.1),
        step("stage", "rolled_back", duration=0.2),
        step("switch", "failed", error="RuntimeError: mesh down"),
        seconds=3.1,
    )
    reporter.runbook_run_finished(RUN, run)
    assert "run rolled back: 1 succeeded, 1 failed, 1 rolled back in 3.1s" in out.getvalue()
