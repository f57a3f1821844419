"""The executor seam: a plugin executor runs every attempt and rollback; chosen by URL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from click.testing import CliRunner

from runbook import Runner
from runbook.cli import cli
from runbook.config import load_config
from runbook.errors import PluginError, UsageError
from runbook.executors import Attempt, Executor
from runbook.executors.local import LocalExecutor
from runbook.hookspecs import Provider, hookimpl


class RecordingExecutor:
    """Runs attempts in-line on the loop and remembers what it was given."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options
        self.attempts: list[Attempt] = []
        self.closed = False

    async def run(self, attempt: Attempt) -> Any:
        self.attempts.append(attempt)
        out = attempt.func(**attempt.kwargs)
        return await out if attempt.is_async else out

    def still_running(self, step: str) -> bool:
        return False

    async def wait_stopped(self, step: str, timeout: float) -> bool:
        return True

    async def aclose(self) -> None:
        self.closed = True


class RecordingPlugin:
    def __init__(self) -> None:
        self.opened: list[RecordingExecutor] = []

    @hookimpl
    def runbook_executors(self) -> list[Provider]:
        def open_(url: str, **options: Any) -> RecordingExecutor:
            executor = RecordingExecutor(url, **options)
            self.opened.append(executor)
            return executor

        return [Provider("rec", open_, "records attempts")]


SOURCE = """
from runbook import rollback, step

@step(reversible=True, lock="db")
def migrate():
    return 7

@rollback(migrate)
def unmigrate(migrate):
    pass

@step
def check(migrate):
    if migrate == 7:
        raise RuntimeError("bad")
"""


def make_runner(**kwargs: Any) -> Runner:
    kwargs.setdefault("store", f"memory://exec-{uuid.uuid4().hex}")
    kwargs.setdefault("locks", f"memory://exec-locks-{uuid.uuid4().hex}")
    return Runner(actor="tester", seed=0, entry_points=False, **kwargs)


def test_a_plugin_executor_runs_every_attempt_and_rollback(write_runbook):
    plugin = RecordingPlugin()
    runner = make_runner(plugins=[plugin], executor="rec://here", max_parallel=3)
    result = runner.run(write_runbook(SOURCE))
    assert result.status == "rolled_back"
    (executor,) = plugin.opened
    assert isinstance(executor, Executor)
    assert executor.options["max_parallel"] == 3 and executor.options["clock"] is runner.clock
    steps = [(a.step, a.rollback, a.attempt) for a in executor.attempts]
    assert steps == [("migrate", False, 1), ("check", False, 1), ("migrate", True, 1)]
    first, second, undo = executor.attempts
    assert first.fencing_token is not None  # the step's lock travels with the attempt
    assert first.run_id == result.run_id
    assert second.kwargs == {"migrate": 7}
    assert undo.kwargs == {"migrate": 7}
    assert executor.closed


def test_each_run_opens_its_own_executor(write_runbook):
    plugin = RecordingPlugin()
    runner = make_runner(plugins=[plugin], executor="rec://")
    path = write_runbook("from runbook import step\n\n@step\ndef a():\n    return 1\n")
    runner.run(path)
    runner.run(path)
    assert len(plugin.opened) == 2


def test_an_executor_object_is_used_as_is(write_runbook):
    executor = RecordingExecutor("rec://obj")
    path = write_runbook("from runbook import step\n\n@step\ndef a():\n    return 1\n")
    assert make_runner(executor=executor).run(path).status == "succeeded"
    assert [a.step for a in executor.attempts] == ["a"]


def test_local_is_the_default_executor(write_runbook):
    runner = make_runner()
    assert runner.executor == "local://"
    assert isinstance(runner.open_executor(), LocalExecutor)


def test_an_unknown_executor_scheme_names_the_known_ones(write_runbook):
    path = write_runbook("from runbook import step\n\n@step\ndef a():\n    return 1\n")
    runner = make_runner(executor="nope://x")
    with pytest.raises(PluginError, match=r"no executor plugin for nope:// .*local://"):
        runner.run(path)
    assert runner.store.list_runs() == []  # refused before the run was recorded


def test_executor_config_key(tmp_path):
    (tmp_path / "runbook.toml").write_text('executor = "rec://cluster"\n')
    assert load_config(tmp_path).executor == "rec://cluster"
    (tmp_path / "runbook.toml").write_text("")
    assert load_config(tmp_path).executor == "local://"
    (tmp_path / "runbook.toml").write_text("executor = 3\n")
    with pytest.raises(UsageError, match="executor"):
        load_config(tmp_path)


def test_exec_executor_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNBOOK_ACTOR", "tester")
    monkeypatch.delenv("RUNBOOK_STORE", raising=False)
    (tmp_path / "runbook.toml").write_text('store = "memory://x"\naudit = ["memory://"]\n')
    (tmp_path / "rb.py").write_text("from runbook import step\n\n@step\ndef a():\n    return 1\n")
    ok = CliRunner().invoke(cli, ["exec", "rb.py", "--executor", "local://", "--json"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(cli, ["exec", "rb.py", "--executor", "nope://"])
    assert bad.exit_code == 2
    assert "no executor plugin for nope://" in bad.output
    assert "Traceback" not in bad.output
