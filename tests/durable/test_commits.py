"""One durable write per transition: commits and fsyncs COUNTED, and the write order they keep.

A step's start is durable before its side effects, its outcome durable before the next step's
effects, and a crash between the store's write and the audit's loses nothing that was
acknowledged (runbook.recorder, docs/durable-runs.md).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runbook import Runner
from runbook.audit.events import AuditEvent
from runbook.audit.jsonl import JsonlSink
from runbook.audit.verify import verify_sink, witness_check


def chain(tmp_path: Path, n: int, body: str = "return i") -> Path:
    lines = ["from runbook import step", ""]
    for i in range(n):
        args = f"s{i - 1}" if i else ""
        lines += ["@step", f"def s{i}({args}):", f"    i = {i}", f"    {body}", ""]
    path = tmp_path / f"chain{n}.py"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def commits(monkeypatch):
    """Counts COMMITs on every SQLite connection opened while the test runs."""
    seen: list[str] = []
    real = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real(*args, **kwargs)
        conn.set_trace_callback(
            lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None
        )
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return seen


@pytest.fixture
def fsyncs(monkeypatch):
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def run_counted(runner: Runner, rb: Path, counter: list) -> int:
    runner.store  # noqa: B018 - opened (and migrated) before counting
    runner.sinks  # noqa: B018
    runner.run(chain(rb.parent, 1))  # the first run creates tables and files
    before = len(counter)
    result = runner.run(rb)
    assert result.status == "succeeded", result.error
    return len(counter) - before


def test_sqlite_store_and_sqlite_audit_commit_once_per_chain_step(tmp_path, commits) -> None:
    db = tmp_path / "runs.db"
    runner = Runner(store=f"sqlite:///{db}", audit=["sqlite://"], locks=None)
    n10 = run_counted(runner, chain(tmp_path, 10), commits)
    n30 = run_counted(runner, chain(tmp_path, 30), commits)
    assert n30 - n10 == 20  # one commit per step: its start and the previous outcome together
    assert n10 <= 10 + 5  # plus the run row, run_started, the last flush, run_finished, status


@pytest.fixture
def synced(monkeypatch):
    """The synced COMMITs (``synchronous`` FULL on their connection) of every SQLite connection
    opened while the test runs; ``synced.relaxed`` the others."""

    class Counts(list):
        relaxed: list[str]

    seen = Counts()
    seen.relaxed = []
    real = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real(*args, **kwargs)
        level = ["FULL"]

        def trace(sql: str) -> None:
            text = " ".join(sql.split()).upper()
            if text.startswith("PRAGMA SYNCHRONOUS ="):
                level[0] = text.split("=")[1].strip()
            elif text == "COMMIT":
                (seen if level[0] == "FULL" else seen.relaxed).append(text)

        conn.set_trace_callback(trace)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return seen


def test_cli_default_fsyncs_once_and_commits_once_unsynced_per_chain_step(
    tmp_path, synced, fsyncs
) -> None:
    """The trail leads (runbook.trail): a chain step's outcome and the next start are one
    synced append, then one store commit without a WAL sync. Before: two fsyncs and one synced
    commit per step."""
    runner = Runner(
        store=f"sqlite:///{tmp_path / 'runs.db'}",
        audit=[f"jsonl://{tmp_path / 'audit.jsonl'}"],
        locks=None,
    )
    f10 = run_counted(runner, chain(tmp_path, 10), fsyncs)
    f30 = run_counted(runner, chain(tmp_path, 30), fsyncs)
    assert f30 - f10 == 20  # one per step: the previous outcome with the start
    runner.run(chain(tmp_path, 1))
    before = len(synced), len(synced.relaxed)
    assert runner.run(chain(tmp_path, 30)).status == "succeeded"
    full, relaxed = len(synced) - before[0], len(synced.relaxed) - before[1]
    # Every start (with the outcome before it), and run_started's and run_finished's witnesses
    # (a witness lost to a power cut is behind the synced trail: harmless).
    assert relaxed == 30 + 2
    assert full == 3  # the run row, the last outcome, the run's status


def test_with_no_store_a_synced_trail_fsyncs_once_per_chain_step(tmp_path, fsyncs) -> None:
    """Nothing to order the trail's appends against: a step's outcome and the next step's start
    are one append. Before: one for the outcome, one for the start (2.03 fsyncs a step)."""
    runner = Runner(store=None, audit=[f"jsonl://{tmp_path / 'audit.jsonl'}"], locks=None)
    n10 = run_counted(runner, chain(tmp_path, 10), fsyncs)
    n30 = run_counted(runner, chain(tmp_path, 30), fsyncs)
    assert n30 - n10 == 20


STEP_READS_THE_TRAIL = """
import json
from runbook import step

TRAIL = {trail!r}

def seen():
    with open(TRAIL) as f:
        return [[e["kind"], e["step"]] for e in map(json.loads, f) if e["step"]]

@step
def first():
    return seen()

@step
def second(first):
    return seen()
"""


def test_with_no_store_an_outcome_is_in_the_trail_before_the_next_steps_effects(
    tmp_path,
) -> None:
    trail = tmp_path / "audit.jsonl"
    rb = tmp_path / "reads.py"
    rb.write_text(STEP_READS_THE_TRAIL.format(trail=str(trail)))
    result = Runner(store=None, audit=[f"jsonl://{trail}"], locks=None).run(rb)
    assert result.status == "succeeded", result.error
    assert result.steps["first"].output == [["step_started", "first"]]
    assert result.steps["second"].output == [
        ["step_started", "first"],
        ["step_succeeded", "first"],
        ["step_started", "second"],
    ]


def test_the_trail_does_not_lead_when_it_is_not_synced(tmp_path, synced, fsyncs) -> None:
    """``fsync = false`` under ``durability = "power"``: nothing may rely on that trail, so
    every store commit is synced and the old order is kept."""
    runner = Runner(
        store=f"sqlite:///{tmp_path / 'runs.db'}",
        audit=[{"url": f"jsonl://{tmp_path / 'audit.jsonl'}", "fsync": False}],
        locks=None,
    )
    runner.run(chain(tmp_path, 1))
    before = len(synced), len(synced.relaxed)
    result = runner.run(chain(tmp_path, 20))
    assert result.status == "succeeded"
    assert len(synced.relaxed) == before[1]
    assert len(synced) - before[0] >= 20
    assert not fsyncs
    assert "trail" not in runner.store.get_run(result.run_id).options


def test_a_new_run_names_the_trail_that_leads_it(tmp_path) -> None:
    audit = tmp_path / "audit.jsonl"
    runner = Runner(store=f"sqlite:///{tmp_path / 'runs.db'}", audit=[f"jsonl://{audit}"])
    result = runner.run(chain(tmp_path, 2))
    options = runner.store.get_run(result.run_id).options
    assert options["trail"] == f"jsonl://{audit.absolute()}"
    assert options["max_parallel"] == runner.max_parallel


def fan(tmp_path: Path, n: int, prefix: str = "async def") -> Path:
    """root -> b0..b{n-1} -> sink: the branches are launched in one pass and end together."""
    branches = [f"b{i}" for i in range(n)]
    lines = ["from runbook import step", "", "@step", f"{prefix} root():", "    return 0", ""]
    for name in branches:
        lines += ["@step", f"{prefix} {name}(root):", f"    return {name[1:]}", ""]
    lines += [f"@step(after={branches!r})", f"{prefix} sink():", "    return 1", ""]
    path = tmp_path / f"fan{n}_{prefix.split()[0]}.py"
    path.write_text("\n".join(lines))
    return path


def count_both(runner: Runner, rb: Path, commits: list, fsyncs: list) -> tuple[int, int]:
    """(commits, fsyncs) of one successful run of ``rb``, the providers already open."""
    runner.run(chain(rb.parent, 1))  # tables and files made, connections open
    before = len(commits), len(fsyncs)
    result = runner.run(rb)
    assert result.status == "succeeded", result.error
    return len(commits) - before[0], len(fsyncs) - before[1]


def test_a_fan_out_costs_what_a_chain_of_three_costs(tmp_path, commits, fsyncs) -> None:
    """20 branches launched together: their 20 starts are one transition (with root's outcome)
    and their 20 outcomes another (with sink's start), so the fan-out of 22 steps costs what a
    chain of 3 steps costs. Before grouping: one commit and two fsyncs more per branch."""
    runner = Runner(
        store=f"sqlite:///{tmp_path / 'runs.db'}",
        audit=[f"jsonl://{tmp_path / 'audit.jsonl'}"],
        locks=None,
        max_parallel=32,
    )
    three = count_both(runner, chain(tmp_path, 3, "return i"), commits, fsyncs)
    fanned = count_both(runner, fan(tmp_path, 20), commits, fsyncs)
    # Each start with the outcome before it, the last outcome, run_started, run_finished.
    assert three[1] == 3 + 1 + 2
    # All 20 branches' starts and outcomes: at most 3 commits and 3 fsyncs (here: none more).
    assert fanned[0] - three[0] <= 0 and fanned[1] - three[1] <= 0, (three, fanned)


def test_a_fan_out_wider_than_max_parallel_costs_one_commit_per_round(
    tmp_path, commits, fsyncs
) -> None:
    """40 branches, 8 at a time: 5 rounds, each one commit (the round's outcomes with the next
    round's starts) and one fsync (those outcomes and starts in one append: the trail leads)."""
    runner = Runner(
        store=f"sqlite:///{tmp_path / 'runs.db'}",
        audit=[f"jsonl://{tmp_path / 'audit.jsonl'}"],
        locks=None,
        max_parallel=8,
    )
    three = count_both(runner, chain(tmp_path, 3, "return i"), commits, fsyncs)
    fanned = count_both(runner, fan(tmp_path, 40), commits, fsyncs)
    rounds = 40 // 8
    assert fanned[0] - three[0] <= rounds, (three, fanned)  # 40, before
    assert fanned[1] - three[1] <= rounds, (three, fanned)  # 80, before grouping


@pytest.mark.parametrize("prefix", ["def", "async def"])
def test_every_branch_finds_its_start_committed_and_the_sink_every_outcome(
    tmp_path, prefix
) -> None:
    """Grouped or not (sync branches end at different moments, in threads), each branch's start
    is durable before its code runs, and every branch's outcome before the step after them."""
    db = tmp_path / "runs.db"
    branches = [f"b{i}" for i in range(6)]
    lines = [STEP_READS_THE_STORE.format(db=str(db)).split("@step")[0], "@step"]
    lines += [f"{prefix} root():", "    return seen('root')", ""]
    for name in branches:
        lines += ["@step", f"{prefix} {name}(root):", f"    return seen({name!r})", ""]
    lines += [f"@step(after={branches!r})", f"{prefix} sink():"]
    lines += [f"    return [seen(name) for name in {branches!r}]", ""]
    rb = tmp_path / f"reads_{prefix.split()[0]}.py"
    rb.write_text("\n".join(lines))
    runner = Runner(store=f"sqlite:///{db}", audit=["sqlite://"], locks=None, max_parallel=8)
    result = runner.run(rb)
    assert result.status == "succeeded", result.error
    for name in branches:
        assert result.steps[name].output == ["running", ["step_started"]]
    done = ["succeeded", ["step_started", "step_succeeded"]]
    assert result.steps["sink"].output == [done] * len(branches)


def test_jsonl_writes_a_transitions_events_with_one_fsync(tmp_path, fsyncs) -> None:
    sink = JsonlSink.open(f"jsonl://{tmp_path / 'a.jsonl'}")
    sink.append(AuditEvent(kind="run_started", run_id="r"))
    before = len(fsyncs)
    events = [AuditEvent(kind=k, run_id="r", step="a") for k in ("step_succeeded", "lock_released")]
    stored = sink.append_many([*events, AuditEvent(kind="step_started", run_id="r", step="b")])
    assert len(fsyncs) - before == 1
    assert [e.seq for e in stored] == [2, 3, 4]
    assert [e.kind for e in sink.events()][1:] == [
        "step_succeeded",
        "lock_released",
        "step_started",
    ]
    assert sink.verify().ok


STEP_READS_THE_STORE = """
import sqlite3
from runbook import step

DB = {db!r}

def seen(name):
    conn = sqlite3.connect(DB)  # another connection: only what is committed
    try:
        status = conn.execute(
            "SELECT status FROM steps WHERE name = ?", (name,)
        ).fetchone()
        kinds = [k for (k,) in conn.execute(
            "SELECT kind FROM audit_events WHERE step = ? ORDER BY seq", (name,)
        )]
        return [status[0] if status else None, kinds]
    finally:
        conn.close()

@step
def first():
    return seen("first")

@step
def second(first):
    return {{"first": seen("first"), "me": seen("second")}}
"""


def test_outcome_is_durable_before_the_next_steps_effects(tmp_path) -> None:
    db = tmp_path / "runs.db"
    rb = tmp_path / "reads.py"
    rb.write_text(STEP_READS_THE_STORE.format(db=str(db)))
    runner = Runner(store=f"sqlite:///{db}", audit=["sqlite://"], locks=None)
    result = runner.run(rb)
    assert result.status == "succeeded", result.error
    # Each step, while running, already finds its own start committed (row and event) ...
    assert result.steps["first"].output == ["running", ["step_started"]]
    out = result.steps["second"].output
    assert out["me"] == ["running", ["step_started"]]
    # ... and the step before it finished, in the store and in the audit.
    assert out["first"] == ["succeeded", ["step_started", "step_succeeded"]]


LOCKED = """
from runbook import step

@step(lock="deploy")
def only():
    return 1
"""


def test_outcome_is_durable_before_its_lock_is_released(tmp_path) -> None:
    from runbook.locks.memory import MemoryLocks

    db = tmp_path / "runs.db"
    seen: list[str | None] = []

    class Watching(MemoryLocks):
        def release(self, lease):
            conn = sqlite3.connect(db)
            row = conn.execute("SELECT status FROM steps WHERE name = 'only'").fetchone()
            conn.close()
            seen.append(row[0] if row else None)
            return super().release(lease)

    rb = tmp_path / "locked.py"
    rb.write_text(LOCKED)
    runner = Runner(store=f"sqlite:///{db}", audit=["sqlite://"], locks=Watching())
    assert runner.run(rb).status == "succeeded"
    assert seen and seen[0] == "succeeded"


KILLER = """
import os, signal, sys
from runbook import Runner
from runbook.audit import sqlite as audit_sqlite

real = audit_sqlite.SqliteSink._insert

def insert(self, conn, events):
    out = real(self, conn, events)  # the rows are in the open transaction, not committed
    if any(e.kind == "step_succeeded" and e.step == "second" for e in events):
        os.kill(os.getpid(), signal.SIGKILL)
    return out

audit_sqlite.SqliteSink._insert = insert
Runner(store=sys.argv[2], audit=["sqlite://"], locks=None).run(sys.argv[1])
"""

THREE = """
from pathlib import Path
from runbook import step

LOG = Path(__file__).with_name("effects.log")

def mark(text):
    with LOG.open("a") as f:
        f.write(text + "\\n")

@step
def first():
    mark("first")
    return 1

@step(idempotent=True)
def second(first):
    mark("second")
    return 2

@step
def third(second):
    mark("third")
    return 3
"""


def test_a_crash_between_the_store_write_and_the_audit_write_loses_nothing(tmp_path) -> None:
    """Killed inside the one transaction that holds second's outcome (row and event) and
    third's start: nothing of it is durable, everything before it is, and resume completes."""
    rb = tmp_path / "three.py"
    rb.write_text(THREE)
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), str(rb), store],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / "effects.log").read_text().split() == ["first", "second"]
    runner = Runner(store=store, audit=["sqlite://"], locks=None, actor="bob")
    (run,) = runner.store.list_runs()
    steps = runner.store.get_steps(run.run_id)
    assert steps["first"].status == "succeeded"
    assert steps["second"].status == "running"  # its outcome died with the transaction
    assert "third" not in steps or steps["third"].status == "pending"
    (sink,) = runner.sinks
    kinds = [(e.kind, e.step) for e in sink.events(None)]
    assert kinds[-1] == ("step_started", "second")
    report = verify_sink(sink.sink, [witness_check(runner.store, sink.chain_id)])
    assert report.ok, report
    result = runner.resume(run.run_id)  # second is idempotent: run again, then third
    assert result.status == "succeeded", result.error
    assert (tmp_path / "effects.log").read_text().split() == ["first", "second", "second", "third"]
    assert verify_sink(sink.sink, [witness_check(runner.store, sink.chain_id)]).ok
