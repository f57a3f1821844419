"""The seam for executors that drive whole runs elsewhere (``runs_remotely``, e.g. temporal://).

``Runner.arun`` hands such an executor the whole run; ``approve``/``deny``/``cancel``/``resume`` of
a stored run whose record names one go to it; a dry run stays local.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from click.testing import CliRunner

from runbook import Runner
from runbook.cli import cli
from runbook.errors import ApprovalError, UsageError
from runbook.hookspecs import Provider, hookimpl
from runbook.result import RunResult
from runbook.store.base import RunRecord

SOURCE = """
from runbook import probe, step

@probe
def look():
    return 1

@step
def change(look):
    return look + 1
"""


class Remote:
    """Records what it was handed instead of running anything."""

    runs_remotely = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.calls: list[tuple[str, Any]] = []

    async def arun(self, runner: Any, rb: Any, *, params: Any, detach: bool) -> RunResult:
        self.calls.append(("arun", (rb.name, params, detach)))
        return RunResult(run_id="r-remote", status="running" if detach else "succeeded")

    def approve(self, runner: Any, run_id: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("approve", (run_id, kw["actor"])))
        return {"run_id": run_id, "step": "change", "approvers": [kw["actor"]], "needed": 1,
                "satisfied": True, "continues": True}  # fmt: skip

    async def adeny(self, runner: Any, run_id: str, **kw: Any) -> RunResult:
        self.calls.append(("deny", (run_id, kw["reason"])))
        return RunResult(run_id=run_id, status="failed")

    async def acancel(self, runner: Any, run_id: str, **kw: Any) -> RunResult:
        self.calls.append(("cancel", run_id))
        return RunResult(run_id=run_id, status="cancelled")

    async def aresume(self, runner: Any, run_id: str, **kw: Any) -> RunResult:
        self.calls.append(("resume", (run_id, kw["retry_interrupted"])))
        return RunResult(run_id=run_id, status="succeeded")

    async def run(self, attempt: Any) -> Any:  # pragma: no cover - never asked
        raise AssertionError("a remote executor runs no attempt here")


class RemotePlugin:
    def __init__(self) -> None:
        self.opened: list[Remote] = []

    @hookimpl
    def runbook_executors(self) -> list[Provider]:
        def open_(url: str, **_: Any) -> Remote:
            self.opened.append(Remote(url))
            return self.opened[-1]

        return [Provider("far", open_, "drives whole runs elsewhere")]


def make(plugin: RemotePlugin, **kw: Any) -> Runner:
    return Runner(
        actor="alice",
        entry_points=False,
        plugins=[plugin],
        executor="far://there",
        store=f"memory://remote-{uuid.uuid4().hex}",
        **kw,
    )


def test_a_run_is_handed_whole_to_an_executor_that_runs_remotely(write_runbook) -> None:
    plugin = RemotePlugin()
    runner = make(plugin)
    result = runner.run(write_runbook(SOURCE))
    assert result.status == "succeeded" and result.run_id == "r-remote"
    (remote,) = plugin.opened
    assert remote.calls == [("arun", (write_runbook(SOURCE).stem, {}, False))]
    assert runner.store.list_runs() == []  # recording the run is the executor's business


def test_a_dry_run_stays_local(write_runbook) -> None:
    plugin = RemotePlugin()
    runner = make(plugin, dry_run=True)
    result = runner.run(write_runbook(SOURCE))
    assert result.status == "succeeded" and result.dry_run
    assert result.steps["look"].output == 1  # the probe ran here
    assert all(not r.calls for r in plugin.opened)


def test_decisions_on_a_stored_run_go_to_the_executor_its_record_names(write_runbook) -> None:
    plugin = RemotePlugin()
    runner = make(plugin)
    runner.store.create_run(
        RunRecord("r1", "x.py", "abc", "dev", "alice", "paused", options={"executor": "far://x"})
    )
    assert runner.approve("r1", actor="bob")["continues"] is True
    assert runner.deny("r1", actor="bob", reason="no").status == "failed"
    assert runner.cancel("r1", actor="bob").status == "cancelled"
    assert runner.resume("r1", retry_interrupted=True).status == "succeeded"
    calls = [c for r in plugin.opened for c in r.calls]
    assert calls == [
        ("approve", ("r1", "bob")),
        ("deny", ("r1", "no")),
        ("cancel", "r1"),
        ("resume", ("r1", True)),
    ]


def test_a_local_stored_run_is_not_routed(write_runbook) -> None:
    plugin = RemotePlugin()
    runner = make(plugin)
    runner.store.create_run(RunRecord("r2", "x.py", "abc", "dev", "alice", "succeeded"))
    with pytest.raises(ApprovalError, match="not paused"):  # the local path answers
        runner.approve("r2", actor="bob")
    assert all(not r.calls for r in plugin.opened)


def test_detach_needs_a_remote_executor(write_runbook, tmp_path) -> None:
    path = write_runbook(SOURCE)
    result = CliRunner().invoke(cli, ["exec", str(path), "--detach"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "--detach needs an executor that runs elsewhere" in result.output


GATED = """
from runbook import step

DONE = []

@step(approval=True)
def change():
    DONE.append("change")
    return "changed"
"""


def test_a_local_run_continued_by_a_runner_set_for_a_remote_executor_runs_here(write_runbook):
    """A run started here (its record names no executor) is approved and resumed by a runner
    configured for ``far://``: its gated step runs in this process, nothing goes to far://."""
    store = f"memory://remote-{uuid.uuid4().hex}"
    rb_path = write_runbook(GATED)
    paused = Runner(actor="alice", entry_points=False, store=store).run(rb_path)
    assert paused.status == "paused"
    plugin = RemotePlugin()
    remote_runner = Runner(
        actor="bob", entry_points=False, plugins=[plugin], executor="far://there", store=store
    )
    assert remote_runner.approve(paused.run_id, actor="bob")["satisfied"] is True
    result = remote_runner.resume(paused.run_id)
    assert result.status == "succeeded", result.error
    assert result.steps["change"].output == "changed"
    assert remote_runner.store.get_steps(paused.run_id)["change"].status == "succeeded"
    assert all(not r.calls for r in plugin.opened)  # opened to ask, never handed the run


def test_resuming_a_remote_run_with_both_retry_and_skip_is_refused_before_sending(write_runbook):
    plugin = RemotePlugin()
    runner = make(plugin)
    runner.store.create_run(
        RunRecord("r3", "x.py", "abc", "dev", "alice", "failed", options={"executor": "far://x"})
    )
    with pytest.raises(UsageError, match="choose one of --retry-interrupted and --skip"):
        runner.resume("r3", retry_interrupted=True, skip_interrupted=True)
    assert all(not r.calls for r in plugin.opened)
