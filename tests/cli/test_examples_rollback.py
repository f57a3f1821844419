"""The examples' rollbacks work when their own step failed, which is when they receive ``None``.

Before, the README's first example answered a failing ``stage`` with "ROLLBACK FAILED: MANUAL
INTERVENTION NEEDED", because ``unstage`` indexed the ``None`` it received.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from runbook import load
from runbook.errors import StepFailed

from .helpers import EXAMPLES, REPO


def _block(page: Path, first_line: str | None = None) -> str:
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    if first_line is None:
        return blocks[0]
    return next(b for b in blocks if b.startswith(first_line))


def test_readme_first_example_rolls_back_a_failed_stage(tmp_path, runbook_runner):
    path = tmp_path / "hello.py"
    path.write_text(_block(REPO / "README.md"))
    runbook_runner.shell.on("deployctl install *", raises=StepFailed("registry unreachable"))
    result = runbook_runner.run(path, runner={"protection": "none"}, version="2.1")
    assert result.status == "rolled_back", result.error
    assert result.steps["stage"].rollback_error is None
    assert runbook_runner.shell.ran("deployctl uninstall web 2.1")
    assert result.steps["switch"].status in ("pending", "skipped")


def test_runbooks_page_rollback_example_rolls_back_a_failed_stage(tmp_path, runbook_runner):
    path = tmp_path / "rollback.py"
    path.write_text(_block(REPO / "docs" / "runbooks.md", "# runbook: rollback.py"))
    runbook_runner.shell.on("deployctl install *", raises=StepFailed("disk full"))
    result = runbook_runner.run(path, runner={"protection": "none"})
    assert result.status == "rolled_back", result.error
    assert runbook_runner.shell.ran("deployctl uninstall web-green")


def test_runbooks_page_says_a_failed_steps_rollback_gets_none():
    text = (REPO / "docs" / "runbooks.md").read_text()
    section = text.split("## Rollbacks", 1)[1].split("\n## ", 1)[0]
    assert "**A rollback receives `None` when its own step failed.**" in section


def _rollback(runbook: str, step: str):
    rb = load(EXAMPLES / runbook)
    rollback = rb.steps[step].rollback
    assert rollback is not None
    return rollback.func


def test_multi_env_undeploy_of_a_failed_deploy(runbook_runner):
    undeploy = _rollback("multi_env.py", "deploy")
    undeploy(None, runbook_runner.shell, "prod")
    undeploy(None, runbook_runner.shell, "staging")
    assert runbook_runner.shell.calls[-2:] == [
        "deployctl rollback orders-canary --env prod",
        "deployctl rollback orders-stable --env staging",
    ]


def test_schema_branch_restore_of_a_failed_backup_changes_nothing():
    restore = _rollback("schema_branch.py", "backup")

    class Untouchable:
        def restore(self, path):
            raise AssertionError("nothing was backed up: nothing to restore")

    assert restore(None, Untouchable()) is None


def test_deploy_rollbacks_of_failed_steps(tmp_path: Path):
    rb = load(EXAMPLES / "deploy.py")
    layout = rb.module.Layout(tmp_path)
    params = SimpleNamespace(version="9.9")
    half_built = layout.releases / ".9.9.tmp" / "public"
    half_built.mkdir(parents=True)
    rb.steps["build"].rollback.func(None, layout, params)
    assert not (layout.releases / ".9.9.tmp").exists()

    class NoServices:
        def stop(self, *args):
            raise AssertionError("start failed: there is no process to stop")

    assert rb.steps["start"].rollback.func(None, None, NoServices()) is None

    moves: list[object] = []

    class Recording:
        def point_current_at(self, release):
            moves.append(("current", release))

        def write_active_port(self, port):
            moves.append(("port", port))

        def release(self, name):
            return tmp_path / "releases" / name

    rb.steps["switch"].rollback.func(None, None, Recording())
    assert moves == [("current", None), ("port", None)]
    moves.clear()
    rb.steps["switch"].rollback.func(None, {"version": "1.0"}, Recording())
    assert moves[0] == ("current", tmp_path / "releases" / "1.0")


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_rollback_accepts_none(name):
    """No rollback in runbooks/ indexes its own step's output without a None check first."""
    source = (EXAMPLES / name).read_text()
    rb = load(EXAMPLES / name)
    for step in rb.steps.values():
        if step.rollback is None:
            continue
        func = step.rollback.func
        code = source.splitlines()
        start = func.__code__.co_firstlineno
        body = "\n".join(code[start : start + 12])
        own = step.name.rsplit(".", 1)[-1]
        if not own.isidentifier():
            continue  # a strategy's generated step: its rollback receives ``output``
        if re.search(rf"\b{own}\[", body):
            assert re.search(rf"\b{own} is None|\b{own} = {own} or|if not {own}\b", body), (
                f"{name}: {func.__name__} indexes {own} without handling None"
            )
