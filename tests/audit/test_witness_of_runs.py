"""The run store witnesses every run's last event in each trail, as real runs write them.

``test_tampering`` writes its trails one event at a time; these run the engine, whose writes
batch a transition's events and, for a trail in the store's own file, append them inside the
store's transaction. A witness that lags the run's end lets the end be cut undetected.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from runbook import Runner, load
from runbook.audit.log import chain_id
from runbook.audit.query import open_sink
from runbook.cli import cli
from runbook.store.sqlite import SqliteStore

from .trails import make_keys

RUNBOOK = """
from runbook import step

@step
def ship():
    return 1

@step
def check(ship):
    return ship + 1
"""


def run_twice(tmp_path: Path, audit: list[str], key: Path | None) -> SqliteStore:
    path = tmp_path / "deploy.py"
    path.write_text(RUNBOOK)
    db = tmp_path / "runbook.db"
    for _ in range(2):
        runner = Runner(
            store=f"sqlite:///{db}",
            audit=audit,
            locks=None,
            actor="alice",
            entry_points=False,
            audit_key=key,
        )
        with runner:
            assert runner.run(load(path)).status == "succeeded"
    return SqliteStore(db, url=f"sqlite:///{db}")


AUDITS = {
    "sqlite trail in the store's file": lambda d: ["sqlite://"],
    "jsonl and a sqlite trail": lambda d: [f"jsonl://{d}/audit.jsonl", "sqlite://"],
    "jsonl alone": lambda d: [f"jsonl://{d}/audit.jsonl"],
}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("audit", list(AUDITS), ids=list(AUDITS))
def test_each_run_s_last_event_in_each_trail_is_witnessed(
    tmp_path: Path, audit: str, signed: bool
) -> None:
    key = make_keys(tmp_path)[0] if signed else None
    urls = AUDITS[audit](tmp_path)
    store = run_twice(tmp_path, urls, key)
    try:
        runs = [run.run_id for run in store.list_runs()]
        assert len(runs) == 2
        for url in urls:
            sink = open_sink(url.replace("sqlite://", f"sqlite:///{tmp_path}/runbook.db"))
            try:
                chain = chain_id(sink)
                for run_id in runs:
                    last = [e for e in sink.events() if e.run_id == run_id][-1]
                    assert last.kind == ("checkpoint" if signed else "run_finished")
                    witness = store.audit_witness(run_id, chain)
                    assert witness is not None, (url, run_id)
                    assert (witness.seq, witness.hash) == (last.seq, last.hash), url
            finally:
                sink.close()
    finally:
        store.close()


def test_cutting_a_run_s_end_from_a_trail_in_the_store_s_file_is_caught(tmp_path: Path) -> None:
    run_twice(tmp_path, ["sqlite://"], None).close()
    db = tmp_path / "runbook.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)")
    result = CliRunner().invoke(
        cli,
        ["audit", "verify", "--sink", f"sqlite:///{db}", "--store", f"sqlite:///{db}"],
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    assert "truncated" in result.output, result.output


@pytest.mark.parametrize("reached", ["a symlink", "a path with '..'"])
def test_a_trail_reached_another_way_is_checked_against_the_same_witness(
    tmp_path: Path, reached: str
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    run_twice(real, [f"jsonl://{real}/audit.jsonl"], None).close()
    trail = real / "audit.jsonl"
    lines = trail.read_text().splitlines(keepends=True)
    trail.write_text("".join(lines[:3]))  # the first run's first three events only
    if reached == "a symlink":
        (tmp_path / "link").symlink_to(real)
        folder = tmp_path / "link"
    else:
        (tmp_path / "other").mkdir()
        folder = tmp_path / "other" / ".." / "real"
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "verify",
            "--sink",
            f"jsonl://{folder}/audit.jsonl",
            "--store",
            f"sqlite:///{folder}/runbook.db",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    assert "truncated: the trail ends at seq 3" in result.output, result.output


def test_a_trail_the_store_has_no_witness_of_says_it_is_not_proven_complete(
    tmp_path: Path,
) -> None:
    # A copy of the trail (or one the runs were not recorded to) passed as plainly as a
    # witnessed one: "ok: 12 events, chain intact", with its end cut or not.
    run_twice(tmp_path, [f"jsonl://{tmp_path}/audit.jsonl"], None).close()
    lines = (tmp_path / "audit.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "copy.jsonl").write_text("".join(lines[:3]))

    def verify(trail: str) -> str:
        result = CliRunner().invoke(
            cli,
            ["audit", "verify", "--sink", trail, "--store", f"sqlite:///{tmp_path}/runbook.db"],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        return result.output

    copy = verify(f"jsonl://{tmp_path}/copy.jsonl")
    assert "ok: 3 events, chain intact" in copy
    assert "not proven complete: the run store holds runs but no witness of this trail" in copy
    original = verify(f"jsonl://{tmp_path}/audit.jsonl")
    assert "witness of 2 runs agrees" in original and "not proven" not in original
