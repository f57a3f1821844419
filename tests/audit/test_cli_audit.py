"""``runbook audit`` and ``runbook audit verify`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from runbook.cli import cli

from .conftest import JsonlStored, SqliteStored, make_event

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args], catch_exceptions=False)


@pytest.fixture
def trail(jsonl: JsonlStored) -> JsonlStored:
    for i in range(10):
        jsonl.sink.append(make_event(i, run_id="run-a"))
    for i in range(10):
        jsonl.sink.append(make_event(10 + i, run_id="run-b", actor="bob"))
    return jsonl


def test_lists_the_trail_as_a_table(trail: JsonlStored) -> None:
    result = run("--sink", trail.url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "AT", "(UTC)"]
    assert len(lines) == 21
    assert lines[7].split()[:7] == [
        "7",
        "2026-11-23",
        "18:06:00",
        "run-a",
        "step_failed",
        "switch",
        "alice",
    ]


@pytest.mark.parametrize(
    ("args", "seqs"),
    [
        (["--run", "run-b", "--kind", "step_failed"], [17]),
        (["--step", "stage", "--run", "run-a"], [3, 4, 8, 9]),
        (["--actor", "bob", "--limit", "2"], [6, 11]),
        (["--since", "2026-11-23T18:17:00Z"], [18, 19, 20]),
        (["--since", "2026-11-23T18:05Z", "--until", "2026-11-23T18:06:00+00:00"], [6, 7]),
        (["--run", "nope"], []),
    ],
)
def test_filters_and_json(trail: JsonlStored, args: list[str], seqs: list[int]) -> None:
    result = run("--sink", trail.url, "--json", *args)
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)["events"]
    assert [e["seq"] for e in events] == seqs
    if events:
        assert set(events[0]) >= {
            "seq",
            "run_id",
            "kind",
            "step",
            "actor",
            "at",
            "params",
            "data",
            "prev_hash",
            "hash",
            "runbook",
            "host",
            "env",
        }


def test_relative_since_uses_the_current_time(trail: JsonlStored) -> None:
    from freezegun import freeze_time

    with freeze_time("2026-11-23T18:20:30Z"):
        result = run("--sink", trail.url, "--json", "--since", "3m")
    assert [e["seq"] for e in json.loads(result.stdout)["events"]] == [19, 20]


def test_no_match_says_so(trail: JsonlStored) -> None:
    result = run("--sink", trail.url, "--run", "nope")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"no matching events in {trail.url}"


def test_unknown_kind_is_a_usage_error_listing_the_kinds(trail: JsonlStored) -> None:
    result = run("--sink", trail.url, "--kind", "step_exploded")
    assert result.exit_code == 2
    assert "'step_exploded' is not one of" in result.stderr
    assert "'step_failed'" in result.stderr and "'notification_failed'" in result.stderr


@pytest.mark.parametrize(("option", "value"), [("--since", "last tuesday"), ("--limit", "0")])
def test_bad_values_are_usage_errors(trail: JsonlStored, option: str, value: str) -> None:
    result = run("--sink", trail.url, option, value)
    assert result.exit_code == 2
    assert option in result.stderr


def test_since_after_until_is_a_usage_error(trail: JsonlStored) -> None:
    result = run("--sink", trail.url, "--since", "2026-11-24", "--until", "2026-11-23")
    assert result.exit_code == 2
    assert "--since (2026-11-24 00:00:00Z) is after --until (2026-11-23 00:00:00Z)" in result.stderr


def test_unknown_scheme_is_a_usage_error(tmp_path: Path) -> None:
    for args in (["--sink", "kafka://x"], ["verify", "--sink", "kafka://x"]):
        result = run(*args)
        assert result.exit_code == 2
        assert "no audit plugin for kafka://" in result.stderr


def test_a_feed_cannot_be_listed(tmp_path: Path) -> None:
    result = run("--sink", "logging://runbook.audit")
    assert result.exit_code == 2
    assert "none of the configured audit sinks can be queried" in result.stderr


# -- verify ---------------------------------------------------------------------------------------


def test_verify_intact(trail: JsonlStored, sqlite_db: SqliteStored) -> None:
    sqlite_db.fill(3)
    result = run("verify", "--sink", trail.url, "--sink", sqlite_db.url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{trail.url}: ok: 20 events, chain intact",
        f"{sqlite_db.url}: ok: 3 events, chain intact",
    ]


def test_verify_names_the_tampered_event_and_exits_1(trail: JsonlStored) -> None:
    lines = trail.lines()
    del lines[4]
    trail.write_lines(lines)
    result = run("verify", "--sink", trail.url)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{trail.url}: TAMPERED at seq 6: event 5 removed")
    assert "audit verification failed for 1 of 1 sink(s)" in result.stderr


def test_verify_json(trail: JsonlStored, sqlite_db: SqliteStored) -> None:
    sqlite_db.fill(2)
    sqlite_db.sql("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    result = run("verify", "--json", "--sink", trail.url, "--sink", sqlite_db.url)
    assert result.exit_code == 1
    first, second = json.loads(result.stdout)["sinks"]
    last = list(trail.sink.events())[-1]
    assert first["status"] == "ok" and first["checked"] == 20
    assert first["head"] == {"seq": 20, "hash": last.hash}  # the value to anchor elsewhere
    assert second["status"] == "tampered" and second["seq"] == 2
    assert "column actor is 'mallory'" in second["problem"]


def test_verify_skips_feeds_and_accepts_the_group_sink_option(trail: JsonlStored) -> None:
    result = run("--sink", trail.url, "verify")
    assert result.exit_code == 0
    assert result.stdout == f"{trail.url}: ok: 20 events, chain intact\n"
    result = run("verify", "--sink", "logging://runbook.audit")
    assert result.exit_code == 0
    assert "skipped: a feed for an external system" in result.stdout


def test_verify_empty_sink_says_so(tmp_path: Path) -> None:
    result = run("verify", "--sink", f"jsonl://{tmp_path}/none.jsonl")
    assert result.exit_code == 0
    assert "ok: 0 events, chain intact (empty: no events recorded yet)" in result.stdout


def test_verify_reports_an_unreadable_sink_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    result = run("verify", "--sink", f"jsonl://{tmp_path}/dir.jsonl")
    assert result.exit_code == 1
    assert "ERROR: audit sink" in result.stdout and "cannot be read" in result.stdout


# -- configuration --------------------------------------------------------------------------------


@dataclass
class FakeSinkConfig:
    url: str
    best_effort: bool = False


@dataclass
class FakeConfig:
    """What runbook.config.load_config returns: URLs already anchored at the project root."""

    store: str = "sqlite:///.runbook/runbook.db"
    audit: list[FakeSinkConfig] = field(default_factory=list)


def test_default_sinks_come_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook.audit.query import open_sink

    for url in (f"jsonl://{tmp_path}/audit.jsonl", f"sqlite:///{tmp_path}/store.db"):
        sink = open_sink(url)
        sink.append(make_event(0))
        sink.close()
    seen: list[Any] = []

    def load_config(start: Path, config_path: Path | None) -> FakeConfig:
        seen.append(config_path)
        return FakeConfig(
            store=f"sqlite:///{tmp_path}/store.db",
            audit=[
                FakeSinkConfig(f"jsonl://{tmp_path}/audit.jsonl"),
                FakeSinkConfig("sqlite://"),  # "in the run store"
                FakeSinkConfig("logging://runbook.audit", True),
            ],
        )

    monkeypatch.setattr("runbook.cli.audit.load_config", load_config)
    result = run("verify", "--config", "runbook.toml")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"jsonl://{tmp_path}/audit.jsonl: ok: 1 event, chain intact",
        f"sqlite:///{tmp_path}/store.db: ok: 1 event, chain intact",
        "logging://runbook.audit: skipped: a feed for an external system, verify it there",
    ]
    assert seen == [Path("runbook.toml")]
    listing = run("--json")
    assert [e["seq"] for e in json.loads(listing.stdout)["events"]] == [1]


def test_real_config_file_relative_paths_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "runbook.toml").write_text('audit = ["jsonl://.runbook/audit.jsonl"]\n')
    from runbook.audit.query import open_sink

    sink = open_sink(f"jsonl://{tmp_path}/.runbook/audit.jsonl")
    sink.append(make_event(0))
    sink.close()
    monkeypatch.chdir(tmp_path / "sub")  # relative to the config's folder, not the cwd
    result = run("verify")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"jsonl://{tmp_path}/.runbook/audit.jsonl: ok: 1 event, chain intact\n"
    (tmp_path / "runbook.toml").write_text("audit = []\n")
    result = run("verify")
    assert result.exit_code == 2
    assert "audit" in result.stderr


def test_no_configured_sink_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runbook.cli.audit.load_config", lambda *a: FakeConfig())
    result = run("verify")
    assert result.exit_code == 2
    assert "no audit sinks configured" in result.stderr


# -- the real thing -------------------------------------------------------------------------------


@pytest.mark.slow
def test_python_dash_m_runbook_audit_verify(trail: JsonlStored) -> None:
    command = [
        sys.executable,
        "-m",
        "runbook",
        "audit",
        "verify",
        "--sink",
        trail.url,
    ]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{trail.url}: ok: 20 events, chain intact\n"

    docs = trail.docs()
    docs[11]["params"]["version"] = "6.6.6"
    trail.write_docs(docs)
    bad = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 1
    assert "TAMPERED at seq 12: event 12 (lock_acquired) was edited" in bad.stdout
    assert bad.stderr.startswith("runbook: error: audit verification failed")
