"""What a step reaches through the run besides its inputs: the ``notify`` resource, routed through
the configured channels with the run's secrets masked, and ``ctx.progress``, passed to the
plugins that listen and costing nothing when none does."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from runbook import Runner, load
from runbook.errors import UsageError
from runbook.hookspecs import hookimpl
from runbook.testing.fakes import FakeNotifier

SECRET = "tok-91c2e7-secret"

NOTIFYING = """
from runbook import param, step

token = param("token", secret=True)

@step
def announce(notify, params):
    notify(f"deploy with {params.token} started", text=f"auth {params.token}", severity="warning")
    return "told"
"""

REPORTING = """
from runbook import param, step

token = param("token", secret=True)

@step
def wait_for_replicas(ctx, params):
    ctx.progress(f"3/5 replicas up ({params.token})", 0.6)
    return "ready"
"""


def _runner(**kw: Any) -> Runner:
    return Runner(
        actor="alice",
        entry_points=False,
        store=f"memory://services-{uuid.uuid4().hex}",
        locks=f"memory://services-{uuid.uuid4().hex}",
        params={"token": SECRET},
        **kw,
    )


def test_the_notify_resource_sends_through_the_configured_channels_masked(write_runbook):
    channel = FakeNotifier()
    runner = _runner(notify=[{"to": "fake://ops", "on": ["adhoc"]}], plugins=[channel.plugin])
    result = runner.run(load(write_runbook(NOTIFYING)))
    assert result.status == "succeeded", result.error
    assert result.steps["announce"].output == "told"
    (message,) = channel.messages  # delivered before the run returned (flushed at its end)
    assert (message.kind, message.severity) == ("adhoc", "warning")
    assert message.title == "deploy with *** started" and message.text == "auth ***"
    assert (message.run_id, message.env, message.actor) == (result.run_id, "dev", "alice")
    assert SECRET not in repr(message)


def test_the_notify_resource_without_channels_sends_nothing_and_the_step_goes_on(write_runbook):
    channel = FakeNotifier()
    result = _runner(plugins=[channel.plugin]).run(load(write_runbook(NOTIFYING)))
    assert result.status == "succeeded" and result.steps["announce"].output == "told"
    assert channel.messages == []


class _Progress:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str, float | None]] = []

    @hookimpl
    def runbook_progress(self, run: Any, step: str | None, message: str, fraction: Any) -> None:
        self.seen.append((step, message, fraction))


def test_progress_reaches_the_plugins_that_listen_masked(write_runbook):
    listener = _Progress()
    result = _runner(plugins=[listener]).run(load(write_runbook(REPORTING)))
    assert result.status == "succeeded", result.error
    assert listener.seen == [("wait_for_replicas", "3/5 replicas up (***)", 0.6)]


def test_progress_with_no_listener_is_a_no_op_for_the_step(write_runbook):
    runner = _runner()
    assert not runner.plugins.has_impls("runbook_progress")  # nobody listens
    result = runner.run(load(write_runbook(REPORTING)))
    assert result.status == "succeeded", result.error
    assert result.steps["wait_for_replicas"].output == "ready"
    # progress is not part of the trail: the run's events are the same as without it
    assert [e.kind for e in result.audit] == [
        "run_started",
        "step_started",
        "step_succeeded",
        "run_finished",
    ]


def test_the_notify_resource_kept_past_its_run_is_refused_quietly(write_runbook, caplog):
    """A message sent once the run is over (the resource kept by the step, or a worker thread
    the run left behind) is not delivered and has no run left to record it: the caller is not
    disturbed, and the log says why it was dropped."""
    source = """
from runbook import param, step

token = param("token", secret=True)
KEPT = []

@step
def announce(notify):
    KEPT.append(notify)
    return "told"
"""
    channel = FakeNotifier()
    runner = _runner(notify=[{"to": "fake://ops", "on": ["adhoc"]}], plugins=[channel.plugin])
    rb = load(write_runbook(source))
    assert runner.run(rb).status == "succeeded"
    (late,) = rb.module.KEPT
    with caplog.at_level(logging.WARNING, logger="runbook.notify"):
        late("deploy finished")  # after the run: its service is closed
    assert channel.messages == []
    assert "'deploy finished'" in caplog.text and "closed" in caplog.text
    assert "failure callback raised" not in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_parallel": 0}, "Runner(max_parallel=...) must be an integer >= 1, got 0"),
        ({"max_parallel": "8"}, "Runner(max_parallel=...) must be an integer >= 1, got '8'"),
        ({"max_parallel": True}, "Runner(max_parallel=...) must be an integer >= 1, got True"),
        ({"lock_timeout": -1}, "Runner(lock_timeout=...) must be seconds >= 0, got -1"),
        ({"lease": 0}, "Runner(lease=...) must be seconds > 0, got 0"),
        ({"paused_lease": float("nan")}, "Runner(paused_lease=...) must be seconds > 0, got nan"),
        ({"flush_deadline": "5"}, "Runner(flush_deadline=...) must be seconds >= 0, got '5'"),
    ],
)
def test_a_bad_numeric_setting_is_refused_by_name_before_anything_opens(kwargs, message):
    with pytest.raises(UsageError) as refused:
        Runner(entry_points=False, **kwargs)
    assert str(refused.value) == message


def test_one_audit_url_given_as_a_string_is_one_sink(write_runbook, tmp_path):
    trail = tmp_path / "trail.jsonl"
    runner = Runner(entry_points=False, audit=f"jsonl://{trail}", store=None, locks=None)
    path = write_runbook("from runbook import step\n@step\ndef a():\n    return 1\n")
    assert runner.run(path).status == "succeeded"
    assert [sink.url for sink in runner.sinks] == [f"jsonl://{trail}"]
    assert trail.read_text().count("\n") >= 3  # run_started, step_started, ... in that one file
