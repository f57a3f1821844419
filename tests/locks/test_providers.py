"""What the file:// and sqlite:// providers promise beyond the shared contract."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from pathlib import Path

import pytest

from runbook.errors import LeaseLost, LockError
from runbook.locks.file import FileLocks, dir_from_url, file_name
from runbook.locks.memory import MemoryLocks
from runbook.locks.sqlite import SqliteLocks, path_from_url
from runbook.plugins import Plugins
from runbook.testing.lock_contract import ManualTime


def test_built_in_providers_are_registered_by_scheme(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plugins = Plugins(entry_points=False)
    assert {"memory", "file", "sqlite"} <= set(plugins.providers("lock"))
    assert isinstance(plugins.open("lock", "file://.runbook/locks"), FileLocks)
    assert (tmp_path / ".runbook" / "locks").is_dir()
    assert isinstance(plugins.open("lock", "sqlite:///.runbook/runbook.db"), SqliteLocks)
    assert (tmp_path / ".runbook" / "runbook.db").is_file()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file://.runbook/locks", Path(".runbook/locks")),
        ("file:///var/lib/runbook/locks", Path("/var/lib/runbook/locks")),
        ("file://", Path(".runbook/locks")),
    ],
)
def test_file_url_paths(url: str, expected: Path) -> None:
    assert dir_from_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///.runbook/runbook.db", ".runbook/runbook.db"),
        ("sqlite:////var/lib/runbook.db", "/var/lib/runbook.db"),
        ("sqlite://", ".runbook/runbook.db"),
        ("sqlite:///locks.db?mode=x", "locks.db"),
    ],
)
def test_sqlite_url_paths(url: str, expected: str) -> None:
    assert path_from_url(url) == expected


@pytest.mark.parametrize("name", ["web-prod", "db:{x}", "../../etc/passwd", "", "é/ü " * 40])
def test_any_lock_name_maps_to_one_safe_file(name: str, tmp_path: Path) -> None:
    stem = file_name(name)
    assert "/" not in stem and not stem.startswith(".") and len(stem) <= 81
    assert stem != file_name(name + "x")
    locks = FileLocks(tmp_path, now=ManualTime())
    lease = locks.acquire(name, "run-1", actor="alice", lease=60)
    assert lease is not None and locks.holder(name) == lease
    assert [held.name for held in locks.held()] == [name]
    assert {p.name for p in tmp_path.iterdir()} == {f"{stem}.json", f"{stem}.lock"}


def test_file_names_stay_readable() -> None:
    assert file_name("web-prod").startswith("web-prod-")
    assert file_name("db:{x}").startswith("db_x-")


def test_released_file_state_keeps_the_last_token(tmp_path: Path) -> None:
    locks = FileLocks(tmp_path, now=ManualTime())
    lease = locks.acquire("web-prod", "run-1", actor="alice", lease=60)
    assert lease is not None
    locks.release(lease)
    state = json.loads((tmp_path / f"{file_name('web-prod')}.json").read_text())
    assert state["name"] == "web-prod" and state["token"] == lease.token
    assert state["owner"] is None
    assert not list(tmp_path.glob("*.tmp")), "no temporary files left behind"


def test_a_corrupt_state_file_is_an_error_not_a_token_reset(tmp_path: Path) -> None:
    locks = FileLocks(tmp_path, now=ManualTime())
    (tmp_path / f"{file_name('web-prod')}.json").write_text("{not json")
    with pytest.raises(LockError, match="is not a runbook lock state file"):
        locks.acquire("web-prod", "run-1", actor="alice", lease=60)
    with pytest.raises(LockError, match="fix or remove it by hand"):
        locks.held()


def test_a_process_stuck_in_the_critical_section_is_an_error_not_a_hang(tmp_path: Path) -> None:
    locks = FileLocks(tmp_path, now=ManualTime(), busy_timeout=0.05)
    fd = os.open(tmp_path / f"{file_name('web-prod')}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as if a stopped process were mid-update
        with pytest.raises(LockError, match="stayed busy"):
            locks.acquire("web-prod", "run-1", actor="alice", lease=60)
        assert locks.holder("web-prod") is None  # reads never need the flock
    finally:
        os.close(fd)
    assert locks.acquire("web-prod", "run-1", actor="alice", lease=60) is not None


def test_an_unusable_lock_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(LockError, match="cannot create lock directory"):
        FileLocks(tmp_path / "file" / "locks")


def test_sqlite_locks_share_the_run_store_file_without_touching_it(tmp_path: Path) -> None:
    db = tmp_path / "runbook.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO runs VALUES ('run-1')")
    locks = SqliteLocks(str(db), now=ManualTime())
    lease = locks.acquire("web-prod", "run-1", actor="alice", lease=60)
    assert lease is not None
    locks.release(lease)
    locks.close()
    with sqlite3.connect(db) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert tables == {"runs", "locks", "lock_tokens", "runbook_schema"}
        assert conn.execute("SELECT id FROM runs").fetchall() == [("run-1",)]
        assert conn.execute("SELECT token FROM lock_tokens").fetchall() == [(lease.token,)]


def test_an_unusable_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "not.db").write_text("this is not a database " * 100)
    with pytest.raises(LockError, match="cannot open lock database"):
        SqliteLocks(str(tmp_path / "not.db"))


@pytest.mark.parametrize("kind", ["memory", "file", "sqlite"])
def test_renewing_an_expired_lease_fails_even_without_a_takeover(kind: str, tmp_path: Path) -> None:
    # The holder was unprotected for a while; pretending otherwise would hide a real risk.
    now = ManualTime()
    provider = {
        "memory": lambda: MemoryLocks(now=now),
        "file": lambda: FileLocks(tmp_path, now=now),
        "sqlite": lambda: SqliteLocks(str(tmp_path / "x.db"), now=now),
    }[kind]()
    lease = provider.acquire("web-prod", "run-1", actor="alice", lease=1)
    assert lease is not None
    now.advance(2)
    with pytest.raises(LeaseLost, match="'web-prod'"):
        provider.renew(lease, 60)


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_lost_lease_message_names_the_new_holder(kind: str, tmp_path: Path) -> None:
    now = ManualTime()
    provider = (
        FileLocks(tmp_path, now=now)
        if kind == "file"
        else SqliteLocks(str(tmp_path / "x.db"), now=now)
    )
    old = provider.acquire("web-prod", "run-1", actor="alice", lease=1)
    assert old is not None
    now.advance(2)
    provider.acquire("web-prod", "run-2", actor="bob", lease=60)
    with pytest.raises(LeaseLost) as info:
        provider.renew(old, 60)
    assert str(info.value) == (
        "lease on lock 'web-prod' (token 1) was lost: it expired and "
        "run run-2 (bob) took it over with token 2"
    )
