from __future__ import annotations

import pytest

from runbook.errors import ConfigError
from runbook.notify.base import Message
from runbook.notify.rules import DEFAULT_ON, Rules, parse_rule
from runbook.notify.templates import build_message

from .conftest import RUN, event

SLACK = "slack://hooks.slack.com/services/T000/B000/XXXXSECRETTOKEN"


def route(rules, ev):
    return Rules.parse(rules).route(build_message(ev, RUN))


def test_rule_without_on_gets_the_default_kinds():
    rules = [{"to": "fake://a"}]
    assert route(rules, event("run_finished", status="succeeded")) == ["fake://a"]
    assert route(rules, event("approval_requested", step="s")) == ["fake://a"]
    assert route(rules, event("lock_denied", error="held")) == ["fake://a"]
    assert route(rules, event("step_started", step="s")) == []
    assert route(rules, event("step_succeeded", step="s")) == []
    assert "adhoc" in DEFAULT_ON


def test_run_failed_alias_matches_failed_runs_only():
    rules = [{"to": "fake://a", "on": ["run_failed"]}]
    for status in ("failed", "rolled_back", "rollback_failed"):
        assert route(rules, event("run_finished", status=status)) == ["fake://a"]
    assert route(rules, event("run_finished", status="succeeded")) == []
    assert route(rules, event("run_finished", status="paused")) == []
    assert route(rules, event("step_failed", step="s")) == []


def test_env_filter():
    rules = [{"to": "fake://prod", "env": ["prod"]}, {"to": "fake://all"}]
    assert route(rules, event("step_failed", env="prod")) == ["fake://prod", "fake://all"]
    assert route(rules, event("step_failed", env="dev")) == ["fake://all"]


def test_severity_is_a_minimum():
    rules = [
        {"to": "fake://pager", "severity": "critical"},
        {"to": "fake://chat", "severity": "warning"},
    ]
    assert route(rules, event("rollback_failed", step="s")) == ["fake://pager", "fake://chat"]
    assert route(rules, event("step_failed", step="s")) == ["fake://chat"]
    assert route(rules, event("run_finished", status="succeeded")) == []


def test_star_matches_every_kind_but_never_notification_failed():
    rules = [{"to": "fake://a", "on": ["*"]}]
    assert route(rules, event("step_started", step="s")) == ["fake://a"]
    assert route(rules, event("notification_failed", error="x")) == []
    explicit = [{"to": "fake://a", "on": ["notification_failed"]}]
    assert route(explicit, event("notification_failed", error="x")) == []


def test_a_channel_in_several_rules_gets_a_message_once():
    rules = [{"to": "fake://a", "on": ["step_failed"]}, {"to": "fake://a"}]
    assert route(rules, event("step_failed", step="s")) == ["fake://a"]


def test_adhoc_messages_route_by_default_and_by_name():
    message = Message(title="hello", kind="adhoc", env="prod", severity="info")
    assert Rules.parse([{"to": "fake://a"}]).route(message) == ["fake://a"]
    assert Rules.parse([{"to": "fake://a", "on": ["step_failed"]}]).route(message) == []
    assert Rules.parse([{"to": "fake://a", "on": ["adhoc"]}]).route(message) == ["fake://a"]


def test_options_per_channel():
    rules = Rules.parse([{"to": "fake://a", "options": {"secret_env": "X"}}])
    assert rules.options("fake://a") == {"secret_env": "X"}
    assert rules.options("fake://b") == {}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"on": ["run_failed"]}, "'to' is required"),
        ({"to": "not a url"}, "'to' is required"),
        ({"to": SLACK, "on": ["run_faild"]}, "unknown event kind(s) in 'on': run_faild"),
        ({"to": SLACK, "on": []}, "'on' is empty"),
        ({"to": SLACK, "on": "step_failed", "env": [1]}, "env must be a list of strings"),
        (
            {"to": SLACK, "severity": "fatal"},
            "severity must be one of info, warning, error, critical",
        ),
        ({"to": SLACK, "channel": "#ops"}, "unknown key(s) channel"),
        ({"to": SLACK, "options": "x"}, "options must be a table"),
    ],
)
def test_bad_rules_are_clear_config_errors(raw, needle):
    with pytest.raises(ConfigError) as info:
        parse_rule(raw, 3)
    assert needle in str(info.value)
    assert "notify[3]" in str(info.value)
    assert "XXXXSECRETTOKEN" not in str(info.value)


def test_a_string_on_is_one_kind():
    assert parse_rule({"to": "fake://a", "on": "step_failed"}).on == {"step_failed"}


def test_rules_must_be_a_list():
    with pytest.raises(ConfigError, match="must be a list of rules"):
        Rules.parse({"to": "fake://a"})
    with pytest.raises(ConfigError, match=r"notify\[1\]"):
        Rules.parse([{"to": "fake://a"}, "fake://b"])


def test_same_channel_with_different_options_is_ambiguous():
    with pytest.raises(ConfigError, match="different options") as info:
        Rules.parse([{"to": SLACK, "options": {"timeout": 1}}, {"to": SLACK}])
    assert "SECRETTOKEN" not in str(info.value)
