"""Real subprocesses for multi-process tests, always reaped: what a plugin's conftest needs to
prove that two processes contend correctly (locks, audit appends) without leaking workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import TracebackType


class ProcessGroup:
    """Starts ``python SCRIPT`` (relative to ``folder``) or ``python -m MODULE``; on exit, every
    process still running is killed and waited for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[str]] = []

    def __call__(self, script: str, *args: str) -> subprocess.Popen[str]:
        return self._start([str(self.folder / script), *args])

    def module(self, name: str, *args: str) -> subprocess.Popen[str]:
        return self._start(["-m", name, *args])

    def _start(self, argv: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
