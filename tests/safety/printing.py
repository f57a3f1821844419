"""A runbook with a secret parameter whose steps print it, run by the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

SECRET = "s3cr3t-token-value"
HEADER = """
import os, subprocess, sys
from runbook import param, step
token = param("token", secret=True, env="TOKEN")
"""


def printing_runbook(tmp_path: Path, steps: str) -> Path:
    """``steps`` (step functions reading ``params.token``) in a runbook of their own project."""
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "printing.py"
    path.write_text(HEADER + textwrap.dedent(steps))
    return path


def exec_command(path: Path) -> list[str]:
    return [sys.executable, "-m", "runbook", "exec", "--yes", str(path)]


def exec_env() -> dict[str, str]:
    """The secret in the environment (where ``env=`` reads it, and a child process too)."""
    return {**os.environ, "TOKEN": SECRET, "NO_COLOR": "1"}


def exec_runbook(path: Path, **popen: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        exec_command(path),
        cwd=path.parent,
        env=exec_env(),
        capture_output=True,
        text=True,
        timeout=60,
        **popen,
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    return done
