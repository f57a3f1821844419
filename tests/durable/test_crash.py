"""A run whose process is SIGKILLed mid-step can be resumed without re-running finished steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runbook import Runner
from runbook.errors import UsageError

# The runbook under test: "second" blocks until its release file appears.
RUNBOOK = (Path(__file__).parent / "crashy.template").read_text()

DRIVER = """
import sys
from runbook import Runner
runner = Runner(store=sys.argv[2], audit=["jsonl://" + sys.argv[3]], locks=None, actor="alice")
runner.run(sys.argv[1], params={"log": sys.argv[4]})
"""


def _start_and_kill(tmp_path: Path, idempotent: bool) -> tuple[Runner, str, Path]:
    rb = tmp_path / "crashy.py"
    rb.write_text(RUNBOOK.replace("IDEMPOTENT", str(idempotent)))
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    log = tmp_path / "steps.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(DRIVER),
            str(rb),
            store,
            str(tmp_path / "audit.jsonl"),
            str(log),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # bounded polling of a real process, not a timed sleep
        if log.exists() and "second" in log.read_text():
            break
        if proc.poll() is not None:
            pytest.fail(f"driver exited early: {proc.communicate()}")
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("the step never started")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    runner = Runner(
        store=store, audit=[f"jsonl://{tmp_path / 'audit.jsonl'}"], locks=None, actor="bob"
    )
    (run,) = runner.store.list_runs()
    return runner, run.run_id, log


def _lines(log: Path) -> list[str]:
    return log.read_text().split()


def test_killed_run_is_left_running_with_the_interrupted_step_marked(tmp_path: Path) -> None:
    runner, run_id, _ = _start_and_kill(tmp_path, idempotent=False)
    assert runner.store.get_run(run_id).status == "running"
    steps = runner.store.get_steps(run_id)
    assert steps["first"].status == "succeeded"
    assert steps["first"].output == "one"
    assert steps["second"].status == "running"
    assert "third" not in steps


def test_resume_refuses_a_non_idempotent_interrupted_step_without_a_choice(tmp_path: Path) -> None:
    runner, run_id, log = _start_and_kill(tmp_path, idempotent=False)
    with pytest.raises(UsageError, match="--retry-interrupted") as info:
        runner.resume(run_id)
    assert "second" in str(info.value)
    assert info.value.exit_code == 2
    assert _lines(log) == ["first", "second"]  # nothing ran


def test_retry_interrupted_reruns_only_the_interrupted_step(tmp_path: Path) -> None:
    runner, run_id, log = _start_and_kill(tmp_path, idempotent=False)
    log.with_suffix(".release").touch()
    result = runner.resume(run_id, retry_interrupted=True)
    assert result.status == "succeeded", result.error
    assert _lines(log) == ["first", "second", "second", "third"]
    assert result.steps["third"].output == "one+two+three"
    (decision,) = runner.store.interrupt_decisions(run_id)
    assert (decision.step, decision.choice, decision.actor) == ("second", "retry", "bob")
    assert runner.store.get_run(run_id).status == "succeeded"


def test_skip_interrupted_skips_it_and_its_data_dependents(tmp_path: Path) -> None:
    runner, run_id, log = _start_and_kill(tmp_path, idempotent=False)
    result = runner.resume(run_id, skip_interrupted=True)
    assert result.status == "succeeded"
    assert result.steps["second"].status == "skipped"
    assert result.steps["third"].status == "skipped"
    assert result.steps["second"].reason == "skipped (operator)"
    assert result.steps["third"].reason == "second skipped"
    assert _lines(log) == ["first", "second"]
    assert runner.store.interrupt_decisions(run_id)[0].choice == "skip"
    kinds = [
        (e.kind, e.data.get("decision")) for e in runner.sinks[0].events() if e.step == "second"
    ]
    assert kinds == [("step_started", None), ("step_interrupted", "skip"), ("step_skipped", None)]


def test_an_idempotent_interrupted_step_is_rerun_without_asking(tmp_path: Path) -> None:
    runner, run_id, log = _start_and_kill(tmp_path, idempotent=True)
    log.with_suffix(".release").touch()
    result = runner.resume(run_id)
    assert result.status == "succeeded"
    assert _lines(log) == ["first", "second", "second", "third"]
    assert runner.store.interrupt_decisions(run_id) == []
    # The re-run is explained in the audit, not two step_started attempt=1 in a row.
    events = [(e.kind, e.step, e.data) for e in runner.sinks[0].events() if e.step == "second"]
    assert [k for k, _, _ in events] == [
        "step_started",
        "step_interrupted",
        "step_started",
        "step_succeeded",
    ]
    assert events[1][2] == {"decision": "rerun", "attempt": 1}


def test_the_audit_trail_shows_the_resume(tmp_path: Path) -> None:
    runner, run_id, log = _start_and_kill(tmp_path, idempotent=True)
    log.with_suffix(".release").touch()
    runner.resume(run_id)
    kinds = [e.kind for e in runner.sinks[0].events() if e.run_id == run_id]
    assert kinds[0] == "run_started"
    assert "run_resumed" in kinds
    assert kinds[-1] == "run_finished"
    assert runner.sinks[0].verify().ok


def test_a_retried_interrupted_step_is_the_next_attempt_in_store_and_trail(tmp_path: Path) -> None:
    # The retry was recorded as attempt 1 again: two different "attempt 1" starts in the trail.
    runner, run_id, log = _start_and_kill(tmp_path, idempotent=False)
    log.with_suffix(".release").touch()
    assert runner.resume(run_id, retry_interrupted=True).status == "succeeded"
    assert runner.store.get_steps(run_id)["second"].attempts == 2
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    starts = [
        e["data"]["attempt"]
        for e in events
        if e["kind"] == "step_started" and e["step"] == "second"
    ]
    assert starts == [1, 2]
    assert [
        e["data"]["attempt"]
        for e in events
        if e["kind"] == "step_succeeded" and e["step"] == "second"
    ] == [2]
