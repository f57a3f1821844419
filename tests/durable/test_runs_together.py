"""Concurrent runs of one Runner on one store: starts reached on the same turn of the loop are
ONE write (runbook.grouping, runbook.grouping.starts_together), COUNTED, and every run's trail
and witnesses stay exact; a refused part stops its own run only; a kill inside the write leaves
each run resumable without any step running twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runbook import Runner, load
from runbook.audit.verify import verify_sink, witness_check
from runbook.errors import StoreError
from runbook.store.sqlite import SqliteStore


def chain(tmp_path: Path, n: int, name: str = "chain") -> Path:
    lines = ["from runbook import step", ""]
    for i in range(n):
        args = f"s{i - 1}" if i else ""
        lines += ["@step", f"async def s{i}({args}):", f"    return {i}", ""]
    path = tmp_path / f"{name}{n}.py"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def counts(monkeypatch):
    seen = {"fsync": 0, "commit": 0}
    real_fsync, real_connect = os.fsync, sqlite3.connect

    def fsync(fd: int) -> None:
        seen["fsync"] += 1
        real_fsync(fd)

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(
            lambda sql: (
                seen.__setitem__("commit", seen["commit"] + 1)
                if sql.strip().upper() == "COMMIT"
                else None
            )
        )
        return conn

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(sqlite3, "connect", connect)
    return seen


def run_together(runner: Runner, rb: Any, n: int) -> list[Any]:
    async def main() -> list[Any]:
        return list(await asyncio.gather(*(runner.arun(rb) for _ in range(n))))

    return asyncio.run(main())


@pytest.mark.parametrize("audit", ["jsonl", "sqlite"])
def test_ten_runs_at_once_write_their_starts_together(tmp_path: Path, counts, audit: str) -> None:
    """10 runs of a 20-step chain at once cost about what one run costs: one append (or one
    commit) for the ten runs' starts of each turn. Before: ten times one run's."""
    sink = f"jsonl://{tmp_path / 'audit.jsonl'}" if audit == "jsonl" else "sqlite://"
    runner = Runner(store=f"sqlite:///{tmp_path / 'runs.db'}", audit=[sink], locks=None)
    rb = load(chain(tmp_path, 20))
    runner.run(rb)  # files made, connections open
    before = dict(counts)
    runner.run(rb)
    one = {k: counts[k] - before[k] for k in counts}
    before = dict(counts)
    results = run_together(runner, rb, 10)
    ten = {k: counts[k] - before[k] for k in counts}
    assert [r.status for r in results] == ["succeeded"] * 10
    key = "fsync" if audit == "jsonl" else "commit"
    assert one[key] >= 20
    # The 20 starts' writes shared by the ten runs; what stays per run: its row, run_started,
    # the last outcome, run_finished, its status (at most five each). Before: ten times one run.
    assert ten[key] <= one[key] + 10 * 5, (one, ten)
    assert ten[key] < 0.4 * 10 * one[key], (one, ten)
    # Every run's trail is complete and witnessed: its events, in order, its last one known.
    store = runner.store
    assert isinstance(store, SqliteStore)
    (log,) = runner.sinks
    events = list(log.events())
    for result in results:
        mine = [(e.kind, e.step) for e in events if e.run_id == result.run_id]
        assert mine.count(("step_started", "s7")) == 1
        assert mine.index(("step_succeeded", "s6")) < mine.index(("step_started", "s7"))
        assert [s.status for s in store.get_steps(result.run_id).values()] == ["succeeded"] * 20
    report = verify_sink(log.sink, [witness_check(store, log.chain_id)])
    assert report.ok, report


@pytest.mark.parametrize("audit", ["jsonl", "sqlite"])
def test_a_part_the_store_refuses_stops_its_own_run_only(tmp_path: Path, audit: str) -> None:
    """The shared commit is refused: it is made again run by run, and only the run whose rows
    the store refuses stops (its rollback, its error); the others go on to succeed."""
    sink = f"jsonl://{tmp_path / 'audit.jsonl'}" if audit == "jsonl" else "sqlite://"
    runner = Runner(store=f"sqlite:///{tmp_path / 'runs.db'}", audit=[sink], locks=None)
    rb = load(chain(tmp_path, 6))
    store = runner.store
    assert isinstance(store, SqliteStore)
    real = store.save_steps
    doomed: list[str] = []

    def refusing(records: Any) -> None:
        if records and not doomed:
            doomed.append(records[0].run_id)  # the first run to write: refused from now on
        if any(r.run_id == doomed[0] and r.name == "s3" for r in records):
            raise StoreError(f"run store refused run {doomed[0]}: disk quota")
        real(records)

    store.save_steps = refusing  # type: ignore[method-assign]
    results = run_together(runner, rb, 4)
    by_id = {r.run_id: r for r in results}
    assert by_id[doomed[0]].status != "succeeded"
    assert "disk quota" in (by_id[doomed[0]].error or "")
    others = [r for r in results if r.run_id != doomed[0]]
    assert [r.status for r in others] == ["succeeded"] * 3


def test_a_part_whose_witness_the_led_store_refuses_stops_its_own_run_only(
    tmp_path: Path,
) -> None:
    """The same when the store refuses one run's witness of the leading trail (not its rows):
    that run's steps stop before s3 runs, the others succeed. Before, the refusal was dropped
    from the shared write: the run's s3 ran though its start's commit was rolled back."""
    runner = Runner(
        store=f"sqlite:///{tmp_path / 'runs.db'}",
        audit=[f"jsonl://{tmp_path / 'audit.jsonl'}"],
        locks=None,
    )
    rb = tmp_path / "marked.py"
    rb.write_text(MARKED)
    store = runner.store
    assert isinstance(store, SqliteStore)
    real = store.witness_audit
    doomed: list[str] = []

    def refusing(run_id: str, chain: str, seq: int, hash: str) -> None:
        steps = store.get_steps(run_id)  # as written so far in this commit
        if not doomed and "s2" in steps:
            doomed.append(run_id)  # the first run to start s2
        if doomed[:1] == [run_id] and ("s3" in steps or len(doomed) > 1):  # from s3's start on
            doomed.append(run_id)
            raise StoreError("witness table is read-only")
        real(run_id, chain, seq, hash)

    store.witness_audit = refusing  # type: ignore[method-assign]
    results = run_together(runner, load(rb), 4)
    by_id = {r.run_id: r for r in results}
    assert "witness table is read-only" in (by_id[doomed[0]].error or "")
    assert by_id[doomed[0]].steps["s3"].status != "succeeded"
    others = [r for r in results if r.run_id != doomed[0]]
    assert [r.status for r in others] == ["succeeded"] * 3
    effects = (tmp_path / "effects.log").read_text().split()
    assert effects.count("s3") == 3, effects  # not in the refused run


KILLER = """
import os, signal, sys, asyncio
from runbook import Runner
from runbook.store import sqlite as store_sqlite

real = store_sqlite.SqliteStore.save_steps

def save_steps(self, steps):
    real(self, steps)  # written, not committed
    if len({s.run_id for s in steps}) > 1 and any(
        s.name == "s2" and s.status == "running" for s in steps
    ):
        os.kill(os.getpid(), signal.SIGKILL)

store_sqlite.SqliteStore.save_steps = save_steps
runner = Runner(store=sys.argv[2], audit=["jsonl://" + sys.argv[3]], locks=None, actor="alice")

async def main():
    await asyncio.gather(*(runner.arun(sys.argv[1]) for _ in range(3)))

asyncio.run(main())
"""

MARKED = """
from pathlib import Path
from runbook import step

def mark(text):
    with Path(__file__).with_name("effects.log").open("a") as f:
        f.write(text + "\\n")
""" + "".join(
    f"""
@step
async def s{i}({f"s{i - 1}" if i else ""}):
    mark("s{i}")
    return {i}
"""
    for i in range(4)
)


def test_a_kill_inside_a_write_shared_by_runs_leaves_each_resumable(tmp_path: Path) -> None:
    """Killed inside the one commit that holds s1's outcome and s2's start of several runs: each
    run resumes to its end, s2 and s3 run once per run, and each step found running (in the
    store, or started in the trail) is decided and audited."""
    rb = tmp_path / "marked.py"
    rb.write_text(MARKED)
    store, audit = f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "audit.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), str(rb), store, str(audit)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    effects = (tmp_path / "effects.log").read_text().split()
    assert "s2" not in effects
    runner = Runner(store=store, audit=[f"jsonl://{audit}"], locks=None, actor="bob")
    runs = runner.store.list_runs()  # type: ignore[union-attr]
    assert len(runs) == 3
    for run in runs:
        result = runner.resume(run.run_id, retry_interrupted=True)
        assert result.status == "succeeded", result.error
    effects = (tmp_path / "effects.log").read_text().split()
    assert effects.count("s2") == 3 and effects.count("s3") == 3  # once per run
    (log,) = runner.sinks
    events = list(log.events())
    for run in runs:
        mine = [e for e in events if e.run_id == run.run_id]
        for i, event in enumerate(mine):  # every start has an outcome or an interruption
            if event.kind == "step_started":
                later = [e.kind for e in mine[i + 1 :] if e.step == event.step]
                assert later and later[0] != "step_started", (run.run_id, event.step, later)
    assert log.verify().ok


# -- starts_together on its own: each run's share, each run's errors -------------------------


def recorders(tmp_path: Path, n: int, sink: Any = None) -> tuple[list[Any], Any]:
    """``n`` RunRecorders of stored runs sharing one SQLite store and one JSONL trail (or
    ``sink``), as the runs of one Runner do."""
    from runbook.audit.jsonl import JsonlSink
    from runbook.audit.log import AuditLog
    from runbook.audit.pipeline import Recorder
    from runbook.clock import SystemClock
    from runbook.context import RunInfo
    from runbook.recorder import RunRecorder
    from runbook.redact import Redactor
    from runbook.store.base import RunRecord

    store = SqliteStore(tmp_path / "runs.db")
    trail = sink or JsonlSink.open(f"jsonl://{tmp_path / 'audit.jsonl'}")
    sinks = [AuditLog(trail, store=store)]
    out = []
    for i in range(n):
        run_id = f"run-{i}"
        store.create_run(RunRecord(run_id, "rb.py", "0" * 64, "dev", "alice", "running"))
        info = RunInfo(run_id, "rb.py", "rb", "0" * 64, "dev", "alice")
        audit = Recorder(info, sinks, clock=SystemClock(), redactor=Redactor())
        out.append(
            RunRecorder(
                audit,
                store,
                hook=None,
                hooks_wanted=frozenset(),
                redactor=Redactor(),
                run_options={"trail": trail.chain_id},
            )
        )
    return out, store


def starts(name: str) -> list[Any]:
    from runbook.result import StepResult

    return [(StepResult(name, status="running"), 1)]  # as the driver hands it over


def test_each_run_gets_its_own_error_when_its_share_cannot_be_prepared(tmp_path: Path) -> None:
    from runbook.grouping import starts_together

    (a, b), store = recorders(tmp_path, 2)
    refused = StoreError("run store failed: disk quota")
    b._trail_noted = False
    b.run_options = {}  # must name its trail first: refused
    b.store.update_run = lambda *args, **kwargs: (_ for _ in ()).throw(refused)  # type: ignore[method-assign]
    errors = starts_together([(a, starts("s0")), (b, starts("s0"))])
    assert errors[0] is None
    assert isinstance(errors[1], StoreError) and "disk quota" in str(errors[1])
    assert store.get_steps("run-0")["s0"].status == "running"
    assert "s0" not in store.get_steps("run-1")


def test_no_write_when_no_run_could_take_part(tmp_path: Path) -> None:
    from runbook.grouping import starts_together

    recs, store = recorders(tmp_path, 2)
    for rec in recs:
        rec._trail_noted, rec.run_options = False, {}
    store.update_run = lambda *args, **kwargs: (_ for _ in ()).throw(StoreError("refused"))  # type: ignore[method-assign]
    errors = starts_together([(rec, starts("s0")) for rec in recs])
    assert [type(e) for e in errors] == [StoreError, StoreError]
    assert not (tmp_path / "audit.jsonl").exists()  # nothing was appended


def test_a_trail_that_refuses_the_shared_append_refuses_every_runs_start(tmp_path: Path) -> None:
    from runbook.audit.jsonl import JsonlSink
    from runbook.errors import AuditError
    from runbook.grouping import starts_together

    class Full(JsonlSink):
        def append_many(self, events: Any) -> Any:
            raise AuditError("audit sink refused the append: disk full")

    full = Full(f"jsonl://{tmp_path / 'audit.jsonl'}", tmp_path / "audit.jsonl")
    recs, store = recorders(tmp_path, 2, sink=full)
    fatal: list[BaseException] = []
    for rec in recs:
        rec.on_fatal = fatal.append
    errors = starts_together([(rec, starts("s0")) for rec in recs])
    assert [str(e) for e in errors] == ["audit sink refused the append: disk full"] * 2
    assert len(fatal) == 2  # each run is told, and stops
    assert "s0" not in store.get_steps("run-0") and "s0" not in store.get_steps("run-1")
