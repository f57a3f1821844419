"""In an interactive terminal, `runbook exec` asks at a gate instead of only pausing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from runbook.cli import cli

GATED = """
from runbook import Approval, step

@step
def prepare():
    return "ready"

@step(approval=APPROVAL)
def switch(prepare):
    return prepare + "!"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "runbook.toml").write_text(
        'store = "sqlite:///.runbook/runbook.db"\naudit = ["sqlite://"]\nlock = "memory://"\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("runbook.cli.exec_.interactive", lambda: True)
    return tmp_path


def _exec(project: Path, approval: str, answer: str, *extra: str):
    (project / "gated.py").write_text(GATED.replace("APPROVAL", approval))
    return CliRunner().invoke(cli, ["exec", "gated.py", "--as", "alice", *extra], input=answer)


def test_yes_at_the_prompt_approves_and_finishes(project: Path) -> None:
    result = _exec(project, "True", "y\n")
    assert result.exit_code == 0, result.output
    assert "Approve 'switch'" in result.output
    shown = CliRunner().invoke(cli, ["runs", "--json"])
    assert '"succeeded"' in shown.output


def test_no_at_the_prompt_leaves_it_paused(project: Path) -> None:
    result = _exec(project, "True", "n\n")
    assert result.exit_code == 3
    assert "runbook approve" in result.output


def test_the_prompt_cannot_bypass_four_eyes(project: Path) -> None:
    result = _exec(project, "Approval(allow_self=False)", "y\n")
    assert result.exit_code == 3
    assert "cannot approve" in result.output  # the refusal, then the usual commands


def test_no_prompt_with_json_or_when_not_interactive(project: Path, monkeypatch) -> None:
    result = _exec(project, "True", "y\n", "--json")
    assert result.exit_code == 3
    assert "Approve" not in result.output
    monkeypatch.setattr("runbook.cli.exec_.interactive", lambda: False)
    result = _exec(project, "True", "y\n")
    assert result.exit_code == 3
    assert "Approve" not in result.output
