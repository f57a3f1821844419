"""Shared fixtures for the CLI tests: an isolated project folder, a CLI invoker, server cleanup."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runbook.cli import cli

from .helpers import EXAMPLES, pids_serving_under


@dataclass
class Project:
    """A throwaway project: its own runbook.toml, store, audit file and locks under ``root``."""

    root: Path

    def write(self, name: str, source: str) -> Path:
        path = self.root / name
        path.write_text(source)
        return path

    def example(self, name: str) -> Path:
        """Copy an example runbook into the project, as a user would."""
        target = self.root / name
        shutil.copy(EXAMPLES / name, target)
        return target


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    for var in ("RUNBOOK_STORE", "RUNBOOK_CONFIG", "RUNBOOK_DEBUG", "RUNBOOK_TRACE_HOOKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RUNBOOK_ACTOR", "tester")
    (tmp_path / "runbook.toml").write_text(
        'store = "sqlite:///.runbook/runbook.db"\n'
        'audit = ["jsonl://.runbook/audit.jsonl"]\n'
        'lock = "file://.runbook/locks"\n'
    )
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path)


@pytest.fixture
def invoke() -> Iterator[Callable[..., Result]]:
    """Run the CLI in-process; stdout and stderr are kept apart, as a shell would see them."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(
            cli, [str(a) for a in args], input=input, catch_exceptions=False, prog_name="runbook"
        )

    yield run


@pytest.fixture
def servers(project: Project) -> Iterator[Path]:
    """The deploy demo's state dir; every server started under it is killed afterwards."""
    root = project.root / ".runbook" / "deploy-demo"
    yield root
    # Only processes whose command line is a server.py under this test's folder: a pid read
    # from a stale server.json may belong to someone else's process by now.
    for pid in pids_serving_under(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
