"""Helpers for the CLI tests that run the real ``runbook`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "runbooks"
# The interpreter running the tests, wherever its venv is (a CI venv, an installed wheel).
PYTHON = Path(sys.executable)
CONSOLE_SCRIPT = PYTHON.parent / "runbook"


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = 60,
    script: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real thing: ``python -m runbook`` (or the ``runbook`` console script) in a process."""
    command = [str(CONSOLE_SCRIPT)] if script else [str(PYTHON), "-m", "runbook"]
    full_env = {**os.environ, "RUNBOOK_ACTOR": "tester", **(env or {})}
    for var in ("RUNBOOK_STORE", "RUNBOOK_CONFIG", "RUNBOOK_DEBUG"):
        full_env.pop(var, None)
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )


def pids_serving_under(root: Path) -> list[int]:
    if not Path("/proc").is_dir():
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline and "server.py" in cmdline:
            found.append(int(proc.name))
    return found


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Bounded polling of a real subprocess's side effect."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
