"""``durability = "power" | "process"``: what each commit survives, from config to the pragmas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runbook import Runner
from runbook.audit.events import AuditEvent
from runbook.audit.jsonl import JsonlSink
from runbook.audit.sqlite import SqliteSink
from runbook.config import load_config
from runbook.errors import AuditError, ConfigError, UsageError
from runbook.store.sqlite import SqliteStore, open_url

FULL, NORMAL = 2, 1  # PRAGMA synchronous values


def synchronous(conn) -> int:
    return conn.execute("PRAGMA synchronous").fetchone()[0]


def test_store_commits_full_by_default_and_normal_for_process(tmp_path: Path) -> None:
    assert synchronous(SqliteStore(tmp_path / "a.db")._conn) == FULL
    store = open_url(f"sqlite:///{tmp_path / 'b.db'}", durability="process")
    assert synchronous(store._conn) == NORMAL


def test_a_bad_durability_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="durability must be 'power' or 'process', got 'fast'"):
        open_url(f"sqlite:///{tmp_path / 'a.db'}", durability="fast")
    with pytest.raises(UsageError, match="got 'fast'"):
        Runner(durability="fast")
    with pytest.raises(AuditError, match="got 'fast'"):
        JsonlSink.open(f"jsonl://{tmp_path / 'a.jsonl'}", durability="fast")


def test_sqlite_sink_follows_durability(tmp_path: Path) -> None:
    for durability, expected in (("power", FULL), ("process", NORMAL)):
        sink = SqliteSink.open(f"sqlite:///{tmp_path / durability}.db", durability=durability)
        sink.append(AuditEvent(kind="run_started", run_id="r"))
        assert synchronous(sink._conn) == expected


def test_jsonl_sink_does_not_fsync_for_process(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    sink = JsonlSink.open(f"jsonl://{tmp_path / 'p.jsonl'}", durability="process")
    sink.append(AuditEvent(kind="run_started", run_id="r"))
    assert calls == []
    power = JsonlSink.open(f"jsonl://{tmp_path / 'f.jsonl'}")
    power.append(AuditEvent(kind="run_started", run_id="r"))
    assert len(calls) == 2  # the new file's directory, then the line


def test_runner_opens_store_and_sinks_with_its_durability(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    runner = Runner(store=f"sqlite:///{db}", audit=["sqlite://"], locks=None, durability="process")
    rb = tmp_path / "one.py"
    rb.write_text("from runbook import step\n\n@step\ndef only():\n    return 1\n")
    assert runner.run(rb).status == "succeeded"
    assert synchronous(runner.store._conn) == NORMAL
    assert synchronous(runner.sinks[0].sink._conn) == NORMAL


def test_lock_providers_follow_the_runners_durability(tmp_path: Path, monkeypatch) -> None:
    """The locks of a ``process`` project skip fsync like its store and audit (a resume's guard
    lock was the last fsync of a signed gate with ``durability = "process"``)."""
    from runbook.locks.file import FileLocks
    from runbook.locks.sqlite import SqliteLocks

    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    process = Runner(locks=f"file://{tmp_path / 'p'}", durability="process").lock_provider
    assert isinstance(process, FileLocks)
    process.release(process.acquire("db", "run-1", actor="a", lease=30))  # type: ignore[arg-type]
    assert calls == []
    power = Runner(locks=f"file://{tmp_path / 'f'}").lock_provider
    assert isinstance(power, FileLocks)
    power.release(power.acquire("db", "run-1", actor="a", lease=30))  # type: ignore[arg-type]
    assert len(calls) == 4  # a new token and a release: the file and its directory, each
    sqlite = Runner(locks=f"sqlite:///{tmp_path / 'l.db'}", durability="process").lock_provider
    assert isinstance(sqlite, SqliteLocks) and synchronous(sqlite._conn) == NORMAL
    assert synchronous(SqliteLocks.open(f"sqlite:///{tmp_path / 'm.db'}")._conn) == FULL


def test_config_key(tmp_path: Path) -> None:
    assert load_config(tmp_path, environ={}).durability == "power"
    (tmp_path / "runbook.toml").write_text('durability = "process"\n')
    config = load_config(tmp_path, environ={})
    assert config.durability == "process"
    assert Runner.from_config(config).durability == "process"
    for bad, said in (('"fast"', "got 'fast'"), ("1", "got an integer")):
        (tmp_path / "runbook.toml").write_text(f"durability = {bad}\n")
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path, environ={})
        assert str(info.value).startswith(f"{tmp_path / 'runbook.toml'}: durability: expected ")
        assert "'power' or 'process'" in str(info.value) and said in str(info.value)


DRIVER = """
import sys
from runbook import Runner
runner = Runner(store=sys.argv[2], audit=["sqlite://", "jsonl://" + sys.argv[3]], locks=None,
                durability="process")
runner.run(sys.argv[1])
"""

RUNBOOK = """
import time
from pathlib import Path
from runbook import step

HERE = Path(__file__).parent

@step
def first():
    return "one"

@step
def second(first):
    (HERE / "started").write_text("x")
    while True:
        time.sleep(0.05)
"""


def test_process_durability_survives_kill_9(tmp_path: Path) -> None:
    """What ``process`` promises: a SIGKILLed run leaves every acknowledged write behind."""
    rb = tmp_path / "hang.py"
    rb.write_text(RUNBOOK)
    store, audit = f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "audit.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(rb), store, str(audit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():  # bounded polling of a real process
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the step never started: {proc.communicate()}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    runner = Runner(store=store, audit=["sqlite://", f"jsonl://{audit}"], locks=None)
    (run,) = runner.store.list_runs()
    steps = runner.store.get_steps(run.run_id)
    assert (steps["first"].status, steps["first"].output) == ("succeeded", "one")
    assert steps["second"].status == "running"
    for sink in runner.sinks:
        kinds = [(e.kind, e.step) for e in sink.events()]
        assert kinds[-2:] == [("step_succeeded", "first"), ("step_started", "second")]
        assert sink.verify().ok
