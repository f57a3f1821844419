"""Real OS processes contending for file:// and sqlite:// locks: what "no stale lock" means."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runbook.locks.file import FileLocks, dir_from_url
from runbook.locks.sqlite import SqliteLocks, path_from_url
from runbook.testing.lock_contract import ManualTime

pytestmark = pytest.mark.slow

OPEN = """
import json, sys, time
from runbook.locks.file import FileLocks
from runbook.locks.sqlite import SqliteLocks
url = sys.argv[1]
provider = (FileLocks if url.startswith("file://") else SqliteLocks).open(url)
"""

# Waits for a start signal so both processes really race, then tries every name once.
RACE = (
    OPEN
    + """
owner, names, go = sys.argv[2], int(sys.argv[3]), sys.argv[4]
import os
open(go + "." + owner, "w").close()  # ready
deadline = time.monotonic() + 20
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)
won = {}
for i in range(names):
    lease = provider.acquire(f"race-{i}", owner, actor=owner, lease=60)
    if lease is not None:
        won[f"race-{i}"] = lease.token
print(json.dumps(won))
"""
)

# Takes the lock, says so, then hangs until killed.
HOLD = (
    OPEN
    + """
lease = provider.acquire("web-prod", sys.argv[2], actor="alice", lease=float(sys.argv[3]))
print(json.dumps({"token": lease.token, "expires_at": lease.expires_at}), flush=True)
time.sleep(60)
"""
)

ONCE = (
    OPEN
    + """
lease = provider.acquire("web-prod", sys.argv[2], actor="bob", lease=60)
print(json.dumps({"token": lease.token if lease else None}))
if lease:
    provider.release(lease)
"""
)


@pytest.fixture(params=["file", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return (
        f"file://{tmp_path / 'locks'}"
        if request.param == "file"
        else f"sqlite:///{tmp_path / 'runbook.db'}"
    )


def _open(url: str, now: Callable[[], float] = time.time) -> FileLocks | SqliteLocks:
    if url.startswith("file://"):
        return FileLocks(dir_from_url(url), url=url, now=now)
    return SqliteLocks(path_from_url(url), url=url, now=now)


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


def test_two_processes_racing_for_the_same_locks_never_both_win(url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    names = 150
    procs = [_python(RACE, url, owner, str(names), str(go)) for owner in ("run-a", "run-b")]
    deadline = time.monotonic() + 20  # bounded polling: both interpreters at the start line
    while not all((tmp_path / f"go.{o}").exists() for o in ("run-a", "run-b")):
        assert time.monotonic() < deadline, "the racing processes did not start"
        time.sleep(0.01)
    go.touch()
    won_a, won_b = (json.loads(_finish(proc)) for proc in procs)

    assert not set(won_a) & set(won_b), "a lock was granted to both processes"
    assert set(won_a) | set(won_b) == {f"race-{i}" for i in range(names)}
    assert set(won_a.values()) | set(won_b.values()) == {1}
    holders = {lease.name: lease.owner for lease in _open(url).held()}
    assert holders == {**dict.fromkeys(won_a, "run-a"), **dict.fromkeys(won_b, "run-b")}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_a_dead_or_stopped_holder_loses_the_lock_when_its_lease_runs_out(
    url: str, sig: signal.Signals
) -> None:
    holder = _python(HOLD, url, "run-dead", "60")
    try:
        assert holder.stdout is not None
        taken = json.loads(holder.stdout.readline() or "null")
        assert taken, holder.stderr.read() if holder.stderr else ""
        os.kill(holder.pid, sig)
        # The lease runs out on this side's clock, moved by hand: no waiting for it.
        now = ManualTime(start=taken["expires_at"] - 1)
        provider = _open(url, now=now)
        assert provider.acquire("web-prod", "run-b", actor="bob", lease=60) is None  # still held
        now.advance(1)
        lease = provider.acquire("web-prod", "run-b", actor="bob", lease=60)
        assert lease is not None, "the lock of a dead holder was not reclaimable"
        assert lease.token > taken["token"]
        assert lease.acquired_at >= taken["expires_at"]
    finally:
        holder.kill()  # SIGKILL also ends a stopped process
        holder.communicate(timeout=10)


def test_tokens_increase_across_processes(url: str) -> None:
    tokens = [json.loads(_finish(_python(ONCE, url, f"run-{i}")))["token"] for i in range(3)]
    assert tokens == sorted(set(tokens)) and tokens[0] >= 1
    lease = _open(url).acquire("web-prod", "run-here", actor="carol", lease=60)
    assert lease is not None and lease.token > tokens[-1]
