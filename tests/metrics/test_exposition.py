"""What a run reports, as data: counters continue, gauges describe the latest run."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from runbook.context import RunInfo
from runbook.metrics import Sample, parse, render, run_samples
from runbook.result import RunResult, StepResult

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
INFO = RunInfo(run_id="r1", runbook="/x/web.py", name="web", sha256="0", env="prod", actor="a")


def _result(status: str = "succeeded", **steps: StepResult) -> RunResult:
    return RunResult(run_id="r1", status=status, steps=dict(steps))


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    wanted = tuple(sorted({"runbook": "web", "env": "prod", **labels}.items()))
    (match,) = [s.value for s in samples if s.name == name and s.labels == wanted]
    return match


def test_a_run_counts_once_under_its_status_and_reports_step_durations():
    result = _result(deploy=StepResult("deploy", status="succeeded", duration=1.5))
    samples = run_samples(INFO, result, now=NOW)
    assert _value(samples, "runbook_runs_total", status="succeeded") == 1
    assert (
        _value(samples, "runbook_step_duration_seconds", step="deploy", status="succeeded") == 1.5
    )
    assert _value(samples, "runbook_last_run_timestamp_seconds") == NOW.timestamp()


def test_counters_continue_from_the_previous_push_and_other_series_are_kept():
    first = run_samples(INFO, _result("succeeded"), now=NOW)
    second = run_samples(INFO, _result("failed"), parse(render(first)), now=NOW)
    third = run_samples(INFO, _result("succeeded"), parse(render(second)), now=NOW)
    assert _value(third, "runbook_runs_total", status="succeeded") == 2
    assert _value(third, "runbook_runs_total", status="failed") == 1


def test_gauges_describe_only_the_latest_run():
    old = run_samples(INFO, _result(a=StepResult("a", status="succeeded", duration=9.0)), now=NOW)
    new = run_samples(INFO, _result(b=StepResult("b", duration=1.0)), parse(render(old)), now=NOW)
    steps = {dict(s.labels)["step"] for s in new if s.name == "runbook_step_duration_seconds"}
    assert steps == {"b"}


def test_rollbacks_are_counted_by_outcome():
    result = _result(
        "rolled_back",
        stage=StepResult("stage", status="rolled_back", duration=0.1),
        push=StepResult("push", status="rollback_failed", duration=0.1),
    )
    samples = run_samples(INFO, result, now=NOW)
    assert _value(samples, "runbook_rollbacks_total", outcome="rolled_back") == 1
    assert _value(samples, "runbook_rollbacks_total", outcome="rollback_failed") == 1


def test_render_and_parse_round_trip_escapes_and_special_values():
    samples = [
        Sample.of("runbook_runs_total", 3, runbook='we"b\\x\nnew', env="prod", status="failed"),
        Sample.of("runbook_step_duration_seconds", math.inf, runbook="w", env="e", step="s"),
    ]
    text = render(samples)
    assert "# TYPE runbook_runs_total counter" in text
    assert "# HELP runbook_step_duration_seconds" in text
    back = {s.key: s.value for s in parse(text)}
    assert back == {s.key: s.value for s in samples}


def test_parse_ignores_comments_and_junk_lines():
    assert parse('# HELP x y\nnot a metric line !!\nx_total 2\nbad_value{a="b"} zzz\n') == [
        Sample("x_total", (), 2.0)
    ]


def test_nothing_to_render_is_empty_text():
    assert render([]) == ""
