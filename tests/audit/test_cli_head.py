"""``runbook audit head``, ``verify --expect-head``, ``--store``, and no password in any output."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runbook.cli import cli

from .conftest import JsonlStored
from .trails import PG_URL


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args])


@pytest.fixture
def filled(jsonl: JsonlStored) -> JsonlStored:
    jsonl.fill(10)
    return jsonl


def test_head_prints_seq_colon_hash(filled: JsonlStored) -> None:
    last = list(filled.sink.events())[-1]
    result = run("head", "--sink", filled.url)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"10:{last.hash}"]  # no checkpoint: one line
    data = json.loads(run("head", "--sink", filled.url, "--json").output)
    assert data["schema"] == "runbook.audit-head/1"
    assert (data["seq"], data["hash"], "checkpoint" in data) == (10, last.hash, False)


def test_head_of_an_empty_trail_is_a_usage_error(tmp_path: Path) -> None:
    result = run("head", "--sink", f"jsonl://{tmp_path / 'none.jsonl'}")
    assert result.exit_code == 2 and "holds no events yet" in result.output


def test_expect_head_passes_while_the_event_is_there(filled: JsonlStored) -> None:
    head = run("head", "--sink", filled.url).output.strip()
    filled.fill(3)  # the trail grows: an old head is still a prefix of it
    result = run("verify", "--sink", filled.url, "--expect-head", head)
    assert result.exit_code == 0, result.output
    assert "expected head 10 present" in result.output


def test_expect_head_fails_on_a_cut_or_rewritten_trail(filled: JsonlStored) -> None:
    head = run("head", "--sink", filled.url).output.strip()
    filled.write_lines(filled.lines()[:7])
    cut = run("verify", "--sink", filled.url, "--expect-head", head)
    assert cut.exit_code == 1
    assert "TAMPERED at seq 8: the expected head 10:" in cut.output
    assert "events 8..10 were cut off" in cut.output
    other = "10:" + "ab" * 32
    filled.fill(3)
    rewritten = run("verify", "--sink", filled.url, "--expect-head", other)
    assert rewritten.exit_code == 1
    assert "TAMPERED at seq 10: event 10 has hash" in rewritten.output
    assert "not the expected head abababababababab" in rewritten.output


@pytest.mark.parametrize("value", ["10", "x:" + "a" * 64, "10:abc", "0:" + "a" * 64])
def test_a_malformed_head_is_a_usage_error(filled: JsonlStored, value: str) -> None:
    result = run("verify", "--sink", filled.url, "--expect-head", value)
    assert result.exit_code == 2 and "expected SEQ:HASH" in result.output


def test_expect_head_needs_one_sink(filled: JsonlStored, tmp_path: Path) -> None:
    result = run(
        "verify",
        "--sink",
        filled.url,
        "--sink",
        f"jsonl://{tmp_path / 'b.jsonl'}",
        "--expect-head",
        "1:" + "a" * 64,
    )
    assert result.exit_code == 2 and "choose one with --sink" in result.output


def test_verify_json_reports_the_head(filled: JsonlStored) -> None:
    last = list(filled.sink.events())[-1]
    document = json.loads(run("verify", "--sink", filled.url, "--json").output)
    assert document["schema"] == "runbook.audit-verify/1"
    (entry,) = document["sinks"]
    assert entry["head"] == {"seq": 10, "hash": last.hash} and entry["status"] == "ok"


def test_a_missing_store_is_not_created_by_verify(filled: JsonlStored, tmp_path: Path) -> None:
    store = tmp_path / "nowhere" / "runbook.db"
    result = run("verify", "--sink", filled.url, "--store", f"sqlite:///{store}")
    assert result.exit_code == 0 and not store.exists()


def test_an_unreadable_public_key_is_a_usage_error(filled: JsonlStored, tmp_path: Path) -> None:
    bad = tmp_path / "key.pub"
    bad.write_text("ssh-rsa not-a-key\n")
    result = run("verify", "--sink", filled.url, "--pubkey", str(bad))
    assert result.exit_code == 2 and "not an OpenSSH or PEM public key" in result.output


@pytest.mark.parametrize("port", [5432, 1])
def test_verify_never_prints_a_postgresql_password(port: int, pg_admin_conn: object) -> None:
    """Reachable (trust auth ignores the password) or not, the password stays out of it."""
    schema = f"rbaudit_{uuid.uuid4().hex[:12]}"
    url = PG_URL.replace("postgres@", "postgres:Sup3rS3cretPw@").replace(":5432", f":{port}")
    try:
        for extra in ([], ["--json"]):
            result = run("verify", "--sink", f"{url}?schema={schema}", *extra)
            assert "Sup3rS3cretPw" not in result.output
            assert result.exit_code == (0 if port == 5432 else 1), result.output
            assert "postgres:***@127.0.0.1" in result.output
    finally:
        pg_admin_conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[attr-defined]
