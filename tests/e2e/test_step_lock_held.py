"""A step's lock held by another run: real ``runbook exec`` processes, a real SQLite lock table
and a separate holder process (``runbook.testing.lock_worker``).

Without ``--lock-timeout`` the run stops at that step: it rolls back what it did, exits 5 (lock
held by another run, DESIGN 3) and names the lock and its holder. With one, it says whom it waits
for, and goes on with a larger fencing token once the holder lets go.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path

import pytest

from runbook.locks.base import Lease
from runbook.locks.sqlite import SqliteLocks
from runbook.testing.processes import ProcessGroup

pytestmark = pytest.mark.slow

RUNBOOK = """
from pathlib import Path

from runbook import rollback, step

SIGNALS = Path({signals!r})


@step(reversible=True)
def stage(ctx):
    (SIGNALS / f"staged-{{ctx.actor}}").touch()
    return "staged"


@rollback(stage)
def unstage(stage, ctx):
    (SIGNALS / f"unstaged-{{ctx.actor}}").touch()


@step(lock="db-{{env}}")
def migrate(stage, ctx):
    (SIGNALS / f"migrated-{{ctx.actor}}").write_text(str(ctx.fencing_token))
    return ctx.fencing_token
"""


def _lines(stream) -> queue.Queue[str]:
    """A reader thread, so the test can wait for one line with a deadline."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_line(lines: queue.Queue[str], text: str, seen: list[str]) -> str:
    deadline = time.monotonic() + 60
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never printed {text!r}:\n{''.join(seen)}"
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return line


def test_a_step_lock_held_by_another_run_exits_5_naming_the_holder_then_waits(
    tmp_path: Path,
) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    db = tmp_path / ".runbook" / "locks.db"
    db.parent.mkdir()
    url = f"sqlite:///{db}"
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "ops"\n\n[tool.runbook]\n'
        'store = "sqlite:///.runbook/runbook.db"\n'
        'audit = ["jsonl://.runbook/audit.jsonl"]\n'
        f'lock = "{url}"\n',
        encoding="utf-8",
    )
    (tmp_path / "deploy.py").write_text(RUNBOOK.format(signals=str(signals)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    argv = ("runbook", "exec", "deploy.py", "--env", "prod")

    with ProcessGroup(tmp_path, cwd=tmp_path, env=env) as spawn:
        holder = spawn.module(
            "runbook.testing.lock_worker", "hold", url, "db-prod", "run-dave", "600"
        )
        assert holder.stdout is not None
        token = json.loads(holder.stdout.readline())["token"]
        assert token is not None, holder.communicate()

        refused = spawn.module(*argv, "--as", "bob")
        out, err = refused.communicate(timeout=60)
        assert refused.returncode == 5, out + err
        assert "db-prod" in out + err and "run-dave" in out + err
        assert "Traceback" not in out + err
        assert (signals / "unstaged-bob").exists(), "what ran before the lock was not rolled back"
        assert not (signals / "migrated-bob").exists(), "a step ran without its lock"

        waiting = spawn.module(*argv, "--as", "carol", "--lock-timeout", "60")
        assert waiting.stdout is not None
        seen: list[str] = []
        line = _wait_line(_lines(waiting.stdout), "waiting for lock db-prod", seen)
        assert "run-dave" in line
        assert not (signals / "migrated-carol").exists()
        SqliteLocks.open(url).release(Lease(name="db-prod", owner="run-dave", token=token))
        waiting.wait(timeout=60)  # stdout is the reader thread's; stderr is small
        err = waiting.stderr.read() if waiting.stderr else ""
        assert waiting.returncode == 0, "".join(seen) + err
        assert int((signals / "migrated-carol").read_text()) > token
        assert not (signals / "unstaged-carol").exists()

    events = [
        json.loads(line)
        for line in (tmp_path / ".runbook" / "audit.jsonl").read_text().splitlines()
    ]
    denied = [e for e in events if e["kind"] == "lock_denied"]
    assert [(e["actor"], e["step"]) for e in denied] == [("bob", "migrate")]
    assert "run-dave" in json.dumps(denied[0]["data"])
    assert SqliteLocks.open(url).held() == [], "a lock outlived its run"
