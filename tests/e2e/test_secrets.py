"""A secret given with -p or through its env variable appears in no byte anything writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SECRET_P = "p-secret-8c1f2e9a77"
SECRET_ENV = "env-secret-41d0b6c3ee"

RUNBOOK = """
from runbook import param, rollback, step

api_key = param("api_key", secret=True)
token = param("token", secret=True, env="E2E_DEPLOY_TOKEN")

@step(reversible=True)
def login(params, ctx):
    header = "Bearer " + params.token
    ctx.record_change("session", None, {"header": header, "key": params.api_key})
    return {"header": header}

@rollback(login)
def logout(login, log):
    log.warning("logging out %s", login)

@step(retries=1, backoff=0)
def push(login, params):
    raise RuntimeError(f"registry refused {login['header']} with key {params.api_key}")
"""

CONFIG = """
store = "sqlite:///.runbook/runbook.db"
audit = [
    "jsonl://.runbook/audit.jsonl",
    "sqlite://",
    {url = "logging://runbook.audit", best_effort = true},
]
lock = "file://.runbook/locks"
notify = [{to = "console://stdout"}]
"""


def _every_byte(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_secrets_leak_nowhere(tmp_path: Path) -> None:
    (tmp_path / "runbook.toml").write_text(CONFIG)
    (tmp_path / "leaky.py").write_text(RUNBOOK)
    env = {**os.environ, "E2E_DEPLOY_TOKEN": SECRET_ENV, "RUNBOOK_ACTOR": "alice"}
    commands = [
        ["exec", "leaky.py", "-p", f"api_key={SECRET_P}"],
        ["exec", "leaky.py", "-p", f"api_key={SECRET_P}", "--json"],
        ["runs", "--json"],
        ["audit", "--json"],
        ["audit", "verify"],
    ]
    outputs = b""
    for args in commands:
        proc = subprocess.run(
            [sys.executable, "-m", "runbook", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
        )
        outputs += proc.stdout + proc.stderr
        if args[0] == "exec":
            assert proc.returncode == 1, proc.stderr.decode()
    run_ids = [
        line.split()[0]
        for line in subprocess.run(
            [sys.executable, "-m", "runbook", "runs"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        if line[:2] == "20"
    ]
    assert len(run_ids) == 2
    for run_id in run_ids:
        proc = subprocess.run(
            [sys.executable, "-m", "runbook", "show", run_id, "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=60,
        )
        outputs += proc.stdout + proc.stderr
    written = _every_byte(tmp_path / ".runbook")
    assert b"registry refused" in outputs + written  # the error itself is there...
    for secret in (SECRET_P, SECRET_ENV):
        assert secret.encode() not in outputs, f"{secret} in CLI output"  # ...its secrets not
        assert secret.encode() not in written, f"{secret} in .runbook files"
    assert b"***" in written
