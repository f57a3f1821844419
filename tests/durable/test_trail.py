"""The JSONL trail leads the store (runbook.trail): one synced append, then an unsynced commit.

What this must keep: a step the trail started is never forgotten, whatever the store lost (a
kill between the two writes, a power cut that takes the store's last unsynced commits), and
nothing refused is left looking started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runbook import Runner, load
from runbook.audit.events import AuditEvent
from runbook.audit.jsonl import JsonlSink
from runbook.audit.log import AuditLog
from runbook.audit.memory import MemorySink
from runbook.cli import cli
from runbook.cli.runs import ROLLED_FORWARD
from runbook.errors import AuditError, StoreError
from runbook.result import STEP_CANCELLED, STEP_STATUSES
from runbook.store.base import StepRecord
from runbook.store.memory import MemoryStore
from runbook.store.sqlite import SqliteStore
from runbook.trail import events_of, leader, roll_forward

RUN = "r1"


def ev(kind: str, step: str | None, **data: Any) -> AuditEvent:
    return AuditEvent(kind=kind, run_id=RUN, step=step, data=data)


def row(name: str, status: str, attempts: int = 1) -> StepRecord:
    return StepRecord(RUN, name, status, attempts=attempts)


# -- roll_forward: the decision, without I/O --------------------------------------------------


def test_a_start_the_store_lost_is_rolled_forward_to_running() -> None:
    events = [ev("run_started", None), ev("step_started", "a", attempt=1)]
    steps = roll_forward({}, events, RUN)
    assert steps["a"].status == "running"
    assert steps["a"].attempts == 1
    pending = roll_forward({"a": row("a", "pending", 0)}, events, RUN)
    assert pending["a"].status == "running"


def test_an_outcome_the_store_lost_with_its_start_is_rolled_forward_to_running() -> None:
    """The store has neither the start nor the outcome: the step ran, its outcome unprovable
    in the store, so resume must decide it (it is not silently done, nor silently re-run)."""
    events = [ev("step_started", "a", attempt=1), ev("step_succeeded", "a", output=1)]
    assert roll_forward({}, events, RUN)["a"].status == "running"


def test_a_later_attempt_the_store_lost_overrides_an_earlier_outcome() -> None:
    events = [
        ev("step_started", "a", attempt=1),
        ev("step_succeeded", "a", output=1),
        ev("step_started", "a", attempt=2),  # run again (a secret output redone)
    ]
    steps = roll_forward({"a": row("a", "succeeded")}, events, RUN)
    assert steps["a"].status == "running"
    assert steps["a"].attempts == 2


def test_what_the_store_already_has_is_left_as_stored() -> None:
    prior = {
        "a": row("a", "succeeded"),
        "b": row("b", "running"),
        "c": row("c", "pending", 0),
        "d": row("d", "skipped", 0),
    }
    events = [
        ev("step_started", "a", attempt=1),
        ev("step_succeeded", "a"),
        ev("step_started", "b", attempt=1),
        ev("step_succeeded", "b"),  # the outcome reached the trail, not the store: running
        ev("step_started", "c", attempt=1),
        ev("step_interrupted", "c", decision="skip"),  # decided by an earlier resume
        ev("step_skipped", "d"),  # never started: nothing to roll forward
        AuditEvent(kind="step_started", run_id="other", step="a"),
    ]
    assert roll_forward(prior, events, RUN) == prior


# -- leader: when the trail may lead -----------------------------------------------------------


def test_a_synced_required_jsonl_trail_leads_a_sqlite_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "runs.db")
    synced = AuditLog(JsonlSink.open(f"jsonl://{tmp_path / 'a.jsonl'}"), store=store)
    assert leader(store, [synced]) is synced
    process = JsonlSink.open(f"jsonl://{tmp_path / 'b.jsonl'}", durability="process")
    assert leader(store, [process]) is process  # nothing is synced: the store is not either


@pytest.mark.parametrize(
    "case",
    ["no store", "a memory store", "best effort", "not synced", "a sink in the store's file"],
)
def test_nothing_leads_where_an_unsynced_commit_could_lose_what_nobody_else_holds(
    tmp_path: Path, case: str
) -> None:
    from runbook.audit.sqlite import SqliteSink

    store: Any = SqliteStore(tmp_path / "runs.db")
    url = f"jsonl://{tmp_path / 'a.jsonl'}"
    sinks: list[Any] = [JsonlSink.open(url)]
    if case == "no store":
        store = None
    elif case == "a memory store":
        store = MemoryStore()
    elif case == "best effort":
        sinks = [JsonlSink.open(url, best_effort=True)]
    elif case == "not synced":
        sinks = [JsonlSink.open(url, fsync=False)]
    else:
        sqlite_sink = SqliteSink.open(f"sqlite:///{tmp_path / 'runs.db'}")
        sinks = [AuditLog(sqlite_sink, store=store), *sinks]
    assert leader(store, sinks) is None


# -- a power cut: the store loses its last unsynced commits, the trail has them ---------------

KILL = "import os, signal; os.environ.get('KILL') and os.kill(os.getpid(), signal.SIGKILL)"
CHAIN = """
import shutil
from pathlib import Path
from runbook import step

HERE = Path(__file__).parent
LOG = HERE / "effects.log"

def mark(text):
    with LOG.open("a") as f:
        f.write(text + "\\n")

def snapshot():  # the store as a power cut would leave it: the commits after this one lost
    for suffix in ("", "-wal"):
        src = HERE / ("runs.db" + suffix)
        if src.exists():
            shutil.copy(src, HERE / ("snapshot.db" + suffix))
""" + "".join(
    f"""
@step{"" if i != 2 else "(idempotent=True)"}
def s{i}({f"s{i - 1}" if i else ""}):
    mark("s{i}")
    {"snapshot()" if i == 1 else ""}
    {KILL if i == 3 else ""}
    return {i}
"""
    for i in range(5)
)


KILL_AT_S3 = {**os.environ, "KILL": "1"}


def killed_at_s3(tmp_path: Path) -> tuple[str, str]:
    """CHAIN run on the CLI default's media in a child process, killed in s3: (store, audit)."""
    rb = tmp_path / "chain.py"
    rb.write_text(CHAIN)
    store, audit = f"sqlite:///{tmp_path / 'runs.db'}", f"jsonl://{tmp_path / 'audit.jsonl'}"
    driver = (
        f"from runbook import Runner\nRunner(store={store!r}, audit=[{audit!r}]).run({str(rb)!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", driver], capture_output=True, timeout=60, env=KILL_AT_S3
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return store, audit


def test_a_power_cut_that_loses_the_stores_last_commits_loses_no_start(tmp_path: Path) -> None:
    """s1 copies the store (its start committed, unsynced); s3 is killed. Putting the copy back
    is the store a power cut leaves when the last commits were never synced: it says s1
    running, and knows nothing of s2 or s3. The trail, synced before each start, has them:
    resume finds s1, s2 and s3 interrupted, and nothing that started is taken as never run."""
    store, audit = killed_at_s3(tmp_path)
    assert (tmp_path / "effects.log").read_text().split() == ["s0", "s1", "s2", "s3"]
    for suffix in ("", "-wal"):
        (tmp_path / f"runs.db{suffix}").unlink(missing_ok=True)
        if (tmp_path / f"snapshot.db{suffix}").exists():
            shutil.move(tmp_path / f"snapshot.db{suffix}", tmp_path / f"runs.db{suffix}")
    (tmp_path / "runs.db-shm").unlink(missing_ok=True)

    runner = Runner(store=store, audit=[audit], locks=None, actor="bob")
    (run,) = runner.store.list_runs()
    steps = runner.store.get_steps(run.run_id)
    assert steps["s1"].status == "running"
    assert "s2" not in steps or steps["s2"].status == "pending"  # lost with the power
    # runbook show says what resume will find: s2 and s3 started, per the trail
    shown = CliRunner().invoke(cli, ["show", run.run_id, "--store", store, "--json"])
    assert shown.exit_code == 0, shown.output
    shown_steps = json.loads(shown.stdout)["steps"]
    assert {n: s["status"] for n, s in shown_steps.items() if n != "s0"} == {
        "s1": "running",
        "s2": "running",
        "s3": "running",
    }
    assert shown_steps["s2"]["reason"] == ROLLED_FORWARD and shown_steps["s1"]["reason"] is None
    text = CliRunner().invoke(cli, ["show", run.run_id, "--store", store])
    assert text.exit_code == 0 and "started per the audit trail" in text.stdout
    with pytest.raises(Exception, match="s1, s3 were running") as refused:
        runner.resume(run.run_id)  # s2 is idempotent: re-run by itself; s1 and s3 are not
    assert "--retry-interrupted" in str(refused.value)

    result = runner.resume(run.run_id, retry_interrupted=True)
    assert result.status == "succeeded", result.error
    effects = (tmp_path / "effects.log").read_text().split()
    assert effects == ["s0", "s1", "s2", "s3", "s1", "s2", "s3", "s4"]
    (sink,) = runner.sinks
    events = list(sink.events())
    assert {e.step for e in events if e.kind == "step_interrupted"} == {"s1", "s2", "s3"}
    assert sink.verify().ok


def test_a_stored_run_whose_leading_trail_is_gone_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Without its trail, what the store lost cannot be known: resume refuses (exit 2, one
    line, nothing run) instead of trusting a store that may lag."""
    for var in ("RUNBOOK_STORE", "RUNBOOK_CONFIG", "RUNBOOK_AUDIT"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "chain.py").write_text(CHAIN)
    proc = subprocess.run(
        [sys.executable, "-m", "runbook", "exec", "chain.py", "--yes"],
        capture_output=True,
        timeout=60,
        env=KILL_AT_S3,
        cwd=tmp_path,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".runbook" / "audit.jsonl").rename(tmp_path / "moved.jsonl")
    (run,) = Runner(store=f"sqlite:///{tmp_path / '.runbook' / 'runbook.db'}").store.list_runs()  # type: ignore[union-attr]
    shown = CliRunner().invoke(cli, ["show", run.run_id], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output  # the store alone, and why
    assert "warning: showing the run store alone" in shown.stderr
    assert "does not exist" in shown.stderr and len(shown.stderr.strip().splitlines()) == 1
    result = CliRunner().invoke(
        cli, ["resume", run.run_id, "--retry-interrupted"], catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert "audit trail" in result.stderr and "does not exist" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "effects.log").read_text().split() == ["s0", "s1", "s2", "s3"]


# -- refused writes: nothing refused looks started ---------------------------------------------

THREE = """
from runbook import rollback, step

DONE = []

@step(reversible=True)
def first():
    DONE.append("first")

@rollback(first)
def unfirst():
    DONE.append("unfirst")

@step
def second(first):
    DONE.append("second")

@step
def third(second):
    DONE.append("third")
"""

ENDED = set(STEP_STATUSES) - {"running", "pending"}


def test_a_start_whose_store_commit_is_refused_is_ended_in_the_trail(tmp_path: Path) -> None:
    """The trail took second's start, then the store refused the commit: second never ran, and
    the run's end writes its step_failed (the trail holds no start without an outcome) and its
    cancelled row."""
    path = tmp_path / "rb.py"
    path.write_text(THREE)
    rb = load(path)
    runner = Runner(
        store=f"sqlite:///{tmp_path / 'runs.db'}",
        audit=[f"jsonl://{tmp_path / 'audit.jsonl'}"],
        locks=None,
    )
    store = runner.store
    assert isinstance(store, SqliteStore)
    real = store.save_steps
    refused: list[str] = []

    def refusing(records: Any) -> None:
        if any(r.name == "second" and r.status == "running" for r in records) and not refused:
            refused.append("second")
            raise StoreError("run store refused: disk full")
        real(records)

    store.save_steps = refusing  # type: ignore[method-assign]
    result = runner.run(rb)
    assert refused == ["second"]
    assert result.status == "rolled_back"
    assert rb.module.DONE == ["first", "unfirst"]
    rows = store.get_steps(result.run_id)
    assert rows["second"].status == STEP_CANCELLED
    assert all(r.status in ENDED for r in rows.values())
    (sink,) = runner.sinks
    kinds = [(e.kind, e.step) for e in sink.events()]
    assert ("step_started", "second") in kinds
    assert kinds.index(("step_failed", "second")) > kinds.index(("step_started", "second"))
    assert sink.verify().ok


class RefusingStart(JsonlSink):
    def append_many(self, events: Any) -> Any:
        if any(e.kind == "step_started" and e.step == "second" for e in events):
            raise AuditError("audit sink refused the append: disk full")
        return super().append_many(events)


def test_a_start_the_trail_refused_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rb.py"
    path.write_text(THREE)
    rb = load(path)
    sink = RefusingStart(f"jsonl://{tmp_path / 'a.jsonl'}", tmp_path / "a.jsonl")
    runner = Runner(store=f"sqlite:///{tmp_path / 'runs.db'}", audit=[sink], locks=None)
    result = runner.run(rb)
    assert result.status == "rolled_back"
    assert "disk full" in (result.error or "")
    assert rb.module.DONE == ["first", "unfirst"]
    assert runner.store is not None
    rows = runner.store.get_steps(result.run_id)
    assert "second" not in rows or rows["second"].status == STEP_CANCELLED
    assert all(r.status in ENDED for r in rows.values())
    assert ("step_started", "second") not in [(e.kind, e.step) for e in sink.events()]


# -- the run's options: which trail leads it ---------------------------------------------------

GATED = """
from runbook import Approval, step

@step
def prepare():
    return 1

@step(approval=Approval())
def switch(prepare):
    return 2

@step
def finish(switch):
    return 3
"""


def test_a_resume_under_another_audit_renames_the_trail_that_leads(tmp_path: Path) -> None:
    path = tmp_path / "gated.py"
    path.write_text(GATED)
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    first = Runner(store=store, audit=[f"jsonl://{tmp_path / 'a.jsonl'}"], actor="alice")
    paused = first.run(path)
    assert paused.status == "paused"
    assert first.store is not None
    options = first.store.get_run(paused.run_id).options
    assert options["trail"] == f"jsonl://{(tmp_path / 'a.jsonl').absolute()}"

    later = Runner(store=store, audit=["sqlite://"], actor="bob")
    later.approve(paused.run_id)
    done = later.resume(paused.run_id)
    assert done.status == "succeeded", done.error
    assert later.store is not None
    options = later.store.get_run(paused.run_id).options
    assert "trail" not in options  # the steps since were recorded in the store's own file
    assert options["max_parallel"] == first.max_parallel


def test_a_rollback_keeps_the_options_the_run_was_created_with(tmp_path: Path) -> None:
    """Before: the first rollback stored ``{"rollback": ...}`` as the run's whole options,
    dropping its hosts, max_parallel and trail, which a resume of the rollback needs."""
    path = tmp_path / "rb.py"
    path.write_text(THREE.replace('DONE.append("second")', 'raise RuntimeError("boom")'))
    audit = tmp_path / "a.jsonl"
    runner = Runner(
        store=f"sqlite:///{tmp_path / 'runs.db'}", audit=[f"jsonl://{audit}"], max_parallel=3
    )
    result = runner.run(path)
    assert result.status == "rolled_back"
    assert runner.store is not None
    options = runner.store.get_run(result.run_id).options
    assert options["rollback"] == "failed"
    assert options["max_parallel"] == 3
    assert options["trail"] == f"jsonl://{audit.absolute()}"


def test_the_cli_default_leads_with_its_trail(tmp_path: Path, monkeypatch) -> None:
    """``runbook exec`` with no configuration: the SQLite store and the JSONL trail, which
    leads; the run says so."""
    for var in ("RUNBOOK_STORE", "RUNBOOK_CONFIG", "RUNBOOK_AUDIT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rb.py").write_text(textwrap.dedent(THREE))
    out = CliRunner().invoke(cli, ["exec", "rb.py", "--yes"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    store = Runner(store=f"sqlite:///{tmp_path / '.runbook' / 'runbook.db'}").store
    assert store is not None
    (run,) = store.list_runs()
    trail = (tmp_path / ".runbook" / "audit.jsonl").absolute()
    assert run.options["trail"] == f"jsonl://{trail}"


class RefusingMemory(MemorySink):
    """A second, required sink that refuses second's start (the JSONL trail took it first)."""

    def append(self, event: Any) -> Any:
        if event.kind == "step_started" and event.step == "second":
            raise AuditError("the second sink refused step_started of second: disk full")
        return super().append(event)


def test_a_start_only_some_sinks_took_is_ended_in_those_that_did(tmp_path: Path) -> None:
    path = tmp_path / "rb.py"
    path.write_text(THREE)
    rb = load(path)
    other = RefusingMemory()
    audit = f"jsonl://{tmp_path / 'a.jsonl'}"
    runner = Runner(store=f"sqlite:///{tmp_path / 'runs.db'}", audit=[audit, other], locks=None)
    result = runner.run(rb)
    assert result.status == "rolled_back"
    assert rb.module.DONE == ["first", "unfirst"]  # second's code never ran
    assert runner.store is not None
    rows = runner.store.get_steps(result.run_id)
    assert rows["second"].status == STEP_CANCELLED
    trail = [(e.kind, e.step) for e in runner.sinks[0].events()]
    assert trail.index(("step_failed", "second")) > trail.index(("step_started", "second"))
    assert runner.sinks[0].verify().ok


def test_a_run_whose_trail_cannot_be_named_in_the_store_starts_nothing(tmp_path: Path) -> None:
    """Resumed under a configuration whose trail leads, the run must first say so in the store
    (or a later resume would not read it); a store refusing that stops the run unstarted."""
    path = tmp_path / "gated.py"
    path.write_text(GATED)
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    first = Runner(store=store, audit=["sqlite://"], actor="alice")
    paused = first.run(path)
    assert paused.status == "paused"
    first.approve(paused.run_id, actor="bob")
    later = Runner(store=store, audit=[f"jsonl://{tmp_path / 'a.jsonl'}"], actor="carol")
    assert later.store is not None
    real = later.store.update_run

    def refusing(run_id: str, **changes: Any) -> Any:
        if "trail" in (changes.get("options") or {}):
            raise StoreError("run store refused: disk full")
        return real(run_id, **changes)

    later.store.update_run = refusing  # type: ignore[method-assign]
    result = later.resume(paused.run_id)
    assert result.status != "succeeded"
    assert "disk full" in (result.error or "")
    steps = later.store.get_steps(paused.run_id)
    assert "finish" not in steps or steps["finish"].status in ("pending", "cancelled")
    assert "trail" not in later.store.get_run(paused.run_id).options


def test_a_trail_this_runbook_cannot_read_is_refused() -> None:
    with pytest.raises(StoreError, match="cannot read; nothing was changed"):
        events_of("postgresql://db/audit", RUN, [])


# -- reading only the run's tail -----------------------------------------------------------------


def test_events_after_reads_the_tail_backwards_in_file_order(tmp_path: Path) -> None:
    sink = JsonlSink.open(f"jsonl://{tmp_path / 'a.jsonl'}")
    big = "x" * 3000  # a few events per 8 KiB block: the tail spans several blocks
    stored = sink.append_many(
        [
            AuditEvent(kind="step_started", run_id=RUN, step=f"s{i}", data={"pad": big})
            for i in range(20)
        ]
    )
    assert [e.seq for e in sink.events_after(15)] == [16, 17, 18, 19, 20]
    assert [e.seq for e in sink.events_after(0)] == [e.seq for e in stored]
    assert sink.events_after(20) == []
    with (tmp_path / "a.jsonl").open("ab") as f:
        f.write(b'{"kind": "step_st')  # a torn last line: never acknowledged, skipped
    assert [e.seq for e in sink.events_after(18)] == [19, 20]
    assert JsonlSink.open(f"jsonl://{tmp_path / 'none.jsonl'}").events_after(0) == []


def test_resume_reads_only_the_runs_events_after_its_witness(tmp_path: Path, monkeypatch) -> None:
    """The store's witness of the run marks what it holds: resume reads the trail back from the
    end to there, not the whole file (a trail of many runs and millions of events)."""
    store, audit = killed_at_s3(tmp_path)
    runner = Runner(store=store, audit=[audit], locks=None, actor="bob")
    (run,) = runner.store.list_runs()  # type: ignore[union-attr]
    read: list[int] = []
    real = JsonlSink.events_after

    def tail(self: JsonlSink, seq: int) -> list[AuditEvent]:
        read.append(seq)
        return real(self, seq)

    def whole(self: JsonlSink, query: Any = None) -> Any:
        raise AssertionError("the whole trail was read")

    def every_witness(self: SqliteStore, chain: str | None = None) -> Any:
        raise AssertionError("every run's witness was read")

    monkeypatch.setattr(JsonlSink, "events_after", tail)
    monkeypatch.setattr(JsonlSink, "events", whole)
    monkeypatch.setattr(SqliteStore, "audit_witnesses", every_witness)  # one looked up
    result = runner.resume(run.run_id, retry_interrupted=True)
    assert result.status == "succeeded", result.error
    assert read and read[0] > 1  # from the run's witness on


def test_a_store_without_witnesses_or_a_trail_without_a_tail_reader_reads_it_all() -> None:
    from runbook.trail import witnessed

    class NoWitnesses:
        pass

    assert witnessed(NoWitnesses(), "jsonl:///t", RUN) == 0
    mem = MemorySink()
    mem.append(AuditEvent(kind="step_started", run_id=RUN, step="a"))
    mem.append(AuditEvent(kind="step_started", run_id="other", step="a"))
    (only,) = events_of(mem.chain_id, RUN, [mem], after=5)  # no events_after: every event
    assert only.run_id == RUN
    store = MemoryStore()
    store.witness_audit(RUN, "memory://", 7, "h" * 64)
    store.witness_audit("other", "memory://", 9, "h" * 64)
    assert witnessed(store, "memory://", RUN) == 7
    assert witnessed(store, "memory://", "nobody") == 0

    class ScanOnly:  # a plugin's store with the protocol's reader only
        audit_witnesses = store.audit_witnesses

    assert witnessed(ScanOnly(), "memory://", RUN) == 7
    assert witnessed(ScanOnly(), "memory://", "nobody") == 0
