from __future__ import annotations

import pytest

from runbook.errors import ConfigError
from runbook.notify.templates import (
    DEFAULT_KINDS,
    PLACEHOLDERS,
    Templates,
    build_message,
    tags,
)

from .conftest import RUN, event


def test_default_kinds_are_the_ones_a_person_acts_on():
    assert {
        "approval_requested",
        "run_finished",
        "rollback_failed",
        "step_failed",
        "run_paused",
        "lock_denied",
    } == DEFAULT_KINDS


@pytest.mark.parametrize(
    ("status", "severity", "words"),
    [
        ("failed", "error", "deploy failed in prod"),
        ("rolled_back", "error", "deploy failed and was rolled back in prod"),
        ("rollback_failed", "critical", "manual intervention needed"),
        ("succeeded", "info", "deploy succeeded in prod"),
        ("cancelled", "warning", "deploy was cancelled in prod"),
    ],
)
def test_run_finished_by_status(status, severity, words):
    message = build_message(event("run_finished", status=status, error="boom"), RUN)
    assert message.severity == severity
    assert words in message.title
    assert message.kind == "run_finished"
    assert message.data["status"] == status
    assert message.run_id == "01JRUN" and message.env == "prod" and message.actor == "alice"
    assert message.runbook == "deploy"


def test_run_failed_alias_tags_only_failed_runs():
    failed = build_message(event("run_finished", status="rolled_back"), RUN)
    ok = build_message(event("run_finished", status="succeeded"), RUN)
    assert "run_failed" in tags(failed) and "run_finished" in tags(failed)
    assert "run_failed" not in tags(ok) and "run_succeeded" in tags(ok)


def test_rollback_failed_is_critical():
    message = build_message(event("rollback_failed", step="switch", error="router down"), RUN)
    assert message.severity == "critical"
    assert "switch" in message.title
    assert message.error == "router down"
    assert message.command == "runbook show 01JRUN"


def test_approval_requested_carries_the_command_to_approve():
    message = build_message(event("approval_requested", step="switch"), RUN)
    assert message.severity == "warning"
    assert message.command == "runbook approve 01JRUN --step switch"
    assert message.step == "switch"


def test_run_paused_carries_the_command_to_resume():
    message = build_message(event("run_paused"), RUN)
    assert message.command == "runbook resume 01JRUN"
    assert message.severity == "warning"


def test_step_failed_has_the_error_text():
    message = build_message(
        event("step_failed", step="verify", error="AssertionError: 503 != 200"), RUN
    )
    assert message.severity == "error"
    assert message.error == "AssertionError: 503 != 200"
    assert "verify" in message.title


def test_event_data_is_kept_for_webhooks():
    message = build_message(event("step_failed", step="verify", error="x"), RUN)
    assert message.data["event"]["kind"] == "step_failed"
    assert message.data["event"]["data"]["error"] == "x"


def test_override_by_alias_wins_over_kind():
    templates = Templates.load(
        {
            "run_failed": {"title": "FAILED {runbook}/{env} by {actor}: {error}"},
            "run_finished": "finished {runbook}",
        }
    )
    failed = templates.render(event("run_finished", status="failed", error="boom"), RUN)
    ok = templates.render(event("run_finished", status="succeeded"), RUN)
    assert failed.title == "FAILED deploy/prod by alice: boom"
    assert ok.title == "deploy succeeded in prod"  # run_succeeded default is more specific
    paused = templates.render(event("run_finished", status="paused"), RUN)
    assert paused.title == "finished deploy"


def test_string_override_is_the_title_and_text_stays_default():
    templates = Templates.load({"approval_requested": "approve: {command}"})
    message = templates.render(event("approval_requested", step="switch"), RUN)
    assert message.title == "approve: runbook approve 01JRUN --step switch"
    assert "waiting at switch" in message.text


def test_every_documented_placeholder_renders():
    template = " ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
    templates = Templates.load({"step_failed": {"title": template, "text": template}})
    message = templates.render(event("step_failed", step="s", error="e"), RUN)
    assert "01JRUN" in message.title and "ci-1" in message.title


def test_values_with_braces_are_not_reinterpreted():
    message = build_message(event("step_failed", step="s", error="KeyError: '{env}'"), RUN)
    assert message.error == "KeyError: '{env}'"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"step_failed": "{stepp} failed"}, "step_failed.title uses unknown placeholder {stepp}"),
        ({"run_failed": {"text": "{run_id.__class__}"}}, "run_failed.text"),
        ({"run_paused": "{0}"}, "run_paused.title"),
        ({"run_paused": "{}"}, "positional"),
        ({"approval_requested": "{step"}, "approval_requested.title is malformed"),
        ({"no_such_kind": "x"}, "unknown event kind 'no_such_kind'"),
        ({"step_failed": {"titel": "x"}}, "unknown key(s) titel"),
        ({"step_failed": 3}, "must be a string"),
        ({"step_failed": {"title": 3}}, "step_failed.title must be a string"),
    ],
)
def test_bad_templates_are_config_errors_naming_the_kind(overrides, needle):
    with pytest.raises(ConfigError, match=None) as info:
        Templates.load(overrides)
    assert needle in str(info.value)
