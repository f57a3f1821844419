"""``runbook locks``: listing held locks as a table or JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from runbook.cli.locks import _duration, locks
from runbook.locks.file import FileLocks, file_name
from runbook.locks.sqlite import SqliteLocks
from runbook.testing.lock_contract import ManualTime

# Far in the future, so the providers (which read the real clock) see these leases as live.
T0 = datetime(2100, 1, 1, tzinfo=UTC).timestamp()


def _take(provider, name: str, owner: str, actor: str, lease: float) -> None:
    assert provider.acquire(name, owner, actor=actor, lease=lease) is not None


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    directory = tmp_path / "locks"
    locks_ = FileLocks(directory, now=ManualTime(start=T0))
    _take(locks_, "web-prod", "run-7f3a", "alice@example.com", 7200)
    _take(locks_, "db:{orders}", "run-0b1c", "bob", 600)
    expired = FileLocks(directory, now=ManualTime(start=datetime(2000, 1, 1).timestamp()))
    _take(expired, "old", "run-dead", "carol", 30)  # its holder died long ago: free
    return f"file://{directory}"


@freeze_time("2100-01-01T00:05:00Z")
def test_lists_live_locks_as_a_table(file_url: str) -> None:
    result = CliRunner().invoke(locks, ["--lock", file_url])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "LOCK         RUN       ACTOR              SINCE                      EXPIRES IN  TOKEN",
        "db:{orders}  run-0b1c  bob                2100-01-01T00:00:00+00:00  5m00s       1",
        "web-prod     run-7f3a  alice@example.com  2100-01-01T00:00:00+00:00  1h55m       1",
    ]


@freeze_time("2100-01-01T00:05:00Z")
def test_json_lists_the_same_locks(file_url: str) -> None:
    result = CliRunner().invoke(locks, ["--lock", file_url, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [lock["name"] for lock in doc["locks"]] == ["db:{orders}", "web-prod"]
    web = doc["locks"][1]
    assert web == {
        "name": "web-prod",
        "owner": "run-7f3a",
        "actor": "alice@example.com",
        "token": 1,
        "acquired_at": "2100-01-01T00:00:00+00:00",
        "expires_at": "2100-01-01T02:00:00+00:00",
        "expires_in": 6900.0,
    }


def test_sqlite_provider_and_registration_in_the_cli(tmp_path: Path) -> None:
    from runbook.cli import cli

    db = tmp_path / "runbook.db"
    _take(SqliteLocks(str(db), now=ManualTime(start=T0)), "web-prod", "run-1", "alice", 60)
    result = CliRunner().invoke(cli, ["locks", "--lock", f"sqlite:///{db}"])
    assert result.exit_code == 0, result.output
    assert "web-prod" in result.output and "run-1" in result.output


def test_no_locks_held(tmp_path: Path) -> None:
    result = CliRunner().invoke(locks, ["--lock", f"file://{tmp_path / 'locks'}"])
    assert result.exit_code == 0
    assert result.output == "no locks held\n"
    result = CliRunner().invoke(locks, ["--lock", f"file://{tmp_path / 'locks'}", "--json"])
    assert json.loads(result.output) == {"schema": "runbook.locks/1", "locks": []}


def test_unknown_scheme_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(locks, ["--lock", "nope://x"])
    assert result.exit_code == 2
    assert "no lock plugin for nope://" in result.output
    assert "Traceback" not in result.output


def test_a_broken_lock_directory_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / f"{file_name('web-prod')}.json").write_text("garbage")
    result = CliRunner().invoke(locks, ["--lock", f"file://{tmp_path}"])
    assert result.exit_code == 1
    assert result.output.startswith("runbook: error: ")
    assert "is not a runbook lock state file" in result.output
    assert len(result.output.splitlines()) == 1


def test_default_provider_comes_from_the_config(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("runbook.config", reason="runbook.config not written yet")
    directory = tmp_path / "shared-locks"
    _take(FileLocks(directory, now=ManualTime(start=T0)), "web-prod", "run-9", "alice", 60)
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "x"\n\n[tool.runbook]\nlock = "file://{directory}"\n'
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(locks, [])
    assert result.exit_code == 0, result.output
    assert "run-9" in result.output
    result = CliRunner().invoke(locks, ["--config", str(tmp_path / "pyproject.toml")])
    assert "run-9" in result.output


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0s"),
        (59, "59s"),
        (61, "1m01s"),
        (3599, "59m59s"),
        (3660, "1h01m"),
        (90000, "1d1h"),
        (-5, "0s"),
    ],
)
def test_durations(seconds: float, text: str) -> None:
    assert _duration(seconds) == text
