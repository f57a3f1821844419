"""A real ``prometheus-pushgateway`` on a free 127.0.0.1 port, and runs to report."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from runbook import Runner, load
from runbook.result import RunResult

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    if not os.path.exists(PUSHGATEWAY):
        message = "prometheus-pushgateway is not installed (Debian: prometheus-pushgateway)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: a missing service fails instead of skipping)")
        pytest.skip(message)
    port = _free_port()
    proc = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "pushgateway.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15  # a real server: real seconds, bounded
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"pushgateway did not start: {(tmp_path / 'pushgateway.log').read_text()}"
                )
            time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


RUNBOOK = """
from runbook import param, rollback, step

fail = param("fail", type=bool, default=False)

@step(reversible=True)
def stage():
    return {"staged": True}

@rollback(stage)
def unstage(stage):
    pass

@step
def switch(stage, params):
    if params.fail:
        raise RuntimeError("switch failed")
    return "switched"
"""


@pytest.fixture
def run_once(tmp_path: Path) -> Callable[..., RunResult]:
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "web_deploy.py"
    path.write_text(textwrap.dedent(RUNBOOK))

    def run(*, fail: bool = False, env: str = "prod") -> RunResult:
        runner = Runner(env=env, params={"fail": fail}, protection="none", entry_points=False)
        return runner.run(load(path))

    return run
