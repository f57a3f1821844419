"""Real subprocesses for multi-process tests, always reaped: what a plugin's conftest needs to
prove that two processes contend correctly (locks, audit appends) without leaking workers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType


class ProcessGroup:
    """Starts ``python SCRIPT`` (relative to ``folder``) or ``python -m MODULE``; on exit, every
    process still running is killed and waited for (a SIGSTOPped one too: SIGKILL ends it).
    ``cwd`` and ``env``: where the processes run and with what environment, for
    processes that find their configuration from their working folder (``runbook exec``)."""

    def __init__(
        self, folder: Path, *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.folder = folder
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.procs: list[subprocess.Popen[str]] = []

    def __call__(self, script: str, *args: str) -> subprocess.Popen[str]:
        return self._start([str(self.folder / script), *args])

    def module(self, name: str, *args: str) -> subprocess.Popen[str]:
        return self._start(["-m", name, *args])

    def _start(self, argv: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
            env=self.env,
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
