"""Store and audit sink in one PostgreSQL database: one transaction, one commit per transition.

A chain step's outcome and the next step's start (rows, events, witness) commit together, as with
SQLite (runbook.recorder, docs/durable-runs.md); commits are COUNTED at the driver (conftest's
``pg_commits``). A crash or a refused event inside that transaction leaves neither part, and two
processes appending this way still form one verifiable chain.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from runbook_postgres.audit import PostgresSink
from runbook_postgres.store import PostgresStore

from runbook import Runner
from runbook.audit.events import AuditEvent
from runbook.audit.verify import verify_sink, witness_check
from runbook.cli import cli
from runbook.errors import AuditError, StoreError
from runbook.store.base import RunRecord, StepRecord

pytestmark = pytest.mark.service

HERE = Path(__file__).parent


def chain(folder: Path, n: int) -> Path:
    lines = ["from runbook import step", ""]
    for i in range(n):
        args = f"s{i - 1}" if i else ""
        lines += ["@step", f"def s{i}({args}):", f"    return {i}", ""]
    path = folder / f"chain{n}.py"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def providers(pg_url: str) -> Iterator[tuple[PostgresStore, PostgresSink]]:
    store, sink = PostgresStore(pg_url), PostgresSink(pg_url)
    yield store, sink
    sink.close()
    store.close()


def verified(sink: PostgresSink, store: PostgresStore) -> bool:
    """The chain verifies, and holds every event the store witnessed."""
    check = witness_check(store, sink.chain_id)
    assert check is not None
    report = verify_sink(sink, [check])
    assert report.ok, report
    return report.ok


def commits_per_run(runner: Runner, rb: Path, commits: list[str]) -> int:
    runner.run(chain(rb.parent, 1))  # tables made, pools warm
    before = len(commits)
    result = runner.run(rb)
    assert result.status == "succeeded", result.error
    return len(commits) - before


def test_store_and_sink_in_one_database_commit_once_per_chain_step(
    tmp_path: Path, providers: tuple[PostgresStore, PostgresSink], pg_commits: list[str]
) -> None:
    store, sink = providers
    assert sink.shares_file_with(store)
    runner = Runner(store=store, audit=[sink], locks=None)
    n10 = commits_per_run(runner, chain(tmp_path, 10), pg_commits)
    n30 = commits_per_run(runner, chain(tmp_path, 30), pg_commits)
    assert n30 - n10 == 20  # the step's start and the previous outcome: one transaction
    assert n10 <= 10 + 5  # plus the run row, run_started, the last flush, run_finished, status
    assert verified(sink, store)


def test_a_sink_on_another_database_keeps_its_own_transactions(
    tmp_path: Path, pg_url: str, pg_commits: list[str]
) -> None:
    """Another identity (here: one more libpq option): the events are not written on the store's
    connection; each transition's events are still one transaction (not one per event)."""
    store, sink = PostgresStore(pg_url), PostgresSink(f"{pg_url}&keepalives=1")
    try:
        assert not sink.shares_file_with(store)
        runner = Runner(store=store, audit=[sink], locks=None)
        n10 = commits_per_run(runner, chain(tmp_path, 10), pg_commits)
        n30 = commits_per_run(runner, chain(tmp_path, 30), pg_commits)
        assert n30 - n10 == 3 * 20  # start row, start event, outcome event (+ row with the next)
    finally:
        sink.close()
        store.close()


STEPS_READ_THE_DATABASE = """
import psycopg
from runbook import step

URL, SCHEMA = {url!r}, {schema!r}

def seen(name):
    with psycopg.connect(URL, autocommit=True) as conn:  # another connection: only commits
        status = conn.execute(
            f"SELECT status FROM {{SCHEMA}}.steps WHERE name = %s", (name,)
        ).fetchone()
        kinds = [k for (k,) in conn.execute(
            f"SELECT kind FROM {{SCHEMA}}.audit_events WHERE step = %s ORDER BY seq", (name,)
        )]
    return [status[0] if status else None, kinds]

@step
def first():
    return seen("first")

@step
def second(first):
    return {{"first": seen("first"), "me": seen("second")}}
"""


def test_outcome_is_durable_before_the_next_steps_effects(
    tmp_path: Path, pg_server: str, pg_schema: str, providers: tuple[PostgresStore, PostgresSink]
) -> None:
    rb = tmp_path / "reads.py"
    rb.write_text(STEPS_READ_THE_DATABASE.format(url=pg_server, schema=pg_schema))
    store, sink = providers
    result = Runner(store=store, audit=[sink], locks=None).run(rb)
    assert result.status == "succeeded", result.error
    assert result.steps["first"].output == ["running", ["step_started"]]
    out = result.steps["second"].output
    assert out["me"] == ["running", ["step_started"]]
    assert out["first"] == ["succeeded", ["step_started", "step_succeeded"]]


def refuse(pg_admin: psycopg.Connection, schema: str, kind: str, step: str) -> None:
    """A trigger that makes the insert of one event fail, as a full disk or a lost privilege."""
    s = sql.Identifier(schema)
    pg_admin.execute(
        sql.SQL(
            "CREATE FUNCTION {}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.kind = {} AND NEW.step = {} THEN RAISE EXCEPTION 'refused by the test';"
            " END IF; RETURN NEW; END $$"
        ).format(s, sql.Literal(kind), sql.Literal(step))
    )
    pg_admin.execute(
        sql.SQL(
            "CREATE TRIGGER refuse BEFORE INSERT ON {}.audit_events"
            " FOR EACH ROW EXECUTE FUNCTION {}.refuse()"
        ).format(s, s)
    )


def test_a_refused_event_rolls_back_the_rows_of_its_transaction(
    providers: tuple[PostgresStore, PostgresSink], pg_admin: psycopg.Connection, pg_schema: str
) -> None:
    store, sink = providers
    store.create_run(RunRecord("r1", "rb.py", "ab", "dev", "alice", "running"))
    refuse(pg_admin, pg_schema, "step_succeeded", "a")
    with pytest.raises(AuditError, match="refused by the test"), store.transaction() as conn:
        store.save_step(StepRecord("r1", "a", "succeeded"))
        sink.append_many([AuditEvent(kind="step_started", run_id="r1", step="b")], conn)
        sink.append_many([AuditEvent(kind="step_succeeded", run_id="r1", step="a")], conn)
    assert store.get_steps("r1") == {}  # the row died with the events it was committed with
    assert list(sink.events()) == []
    with store.transaction() as conn:  # the connection went back to the pool usable
        store.save_step(StepRecord("r1", "a", "running"))
        (event,) = sink.append_many([AuditEvent(kind="step_started", run_id="r1", step="a")], conn)
        store.witness_audit("r1", sink.chain_id, event.seq or 0, event.hash or "")
    assert store.get_steps("r1")["a"].status == "running"
    assert [e.seq for e in sink.events()] == [1]
    assert verified(sink, store)


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


def test_a_refused_outcome_event_stops_the_run_before_the_next_step(
    tmp_path: Path,
    providers: tuple[PostgresStore, PostgresSink],
    pg_admin: psycopg.Connection,
    pg_schema: str,
) -> None:
    rb = tmp_path / "three.py"
    rb.write_text(THREE)
    store, sink = providers
    refuse(pg_admin, pg_schema, "step_succeeded", "second")
    runner = Runner(store=store, audit=[sink], locks=None)
    result = runner.run(rb)
    assert result.status == "failed" and "refused by the test" in (result.error or "")
    assert (tmp_path / "effects.log").read_text().split() == ["first", "second"]
    kinds = [(e.kind, e.step) for e in sink.events() if e.step == "second"]
    assert kinds == [("step_started", "second")]
    assert verified(sink, store)  # no witness ahead of the trail


KILLER = """
import os, signal, sys
from runbook import Runner
from runbook_postgres import audit

real = audit.PostgresSink.append_many

def append_many(self, events, conn=None):
    out = real(self, events, conn)  # handed to the store's open transaction, not committed
    if any(e.kind == "step_succeeded" and e.step == "second" for e in events):
        os.kill(os.getpid(), signal.SIGKILL)
    return out

audit.PostgresSink.append_many = append_many
Runner(store=sys.argv[2], audit=[sys.argv[2]], locks=None).run(sys.argv[1])
"""


@pytest.mark.slow
def test_a_crash_inside_the_shared_transaction_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    """Killed inside the transaction holding second's outcome (row, event) and third's start:
    none of it is committed, everything before it is, and resume completes."""
    rb = tmp_path / "three.py"
    rb.write_text(THREE)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), str(rb), pg_url],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / "effects.log").read_text().split() == ["first", "second"]
    store, sink = PostgresStore(pg_url), PostgresSink(pg_url)
    try:
        runner = Runner(store=store, audit=[sink], locks=None, actor="bob")
        (run,) = store.list_runs()
        steps = store.get_steps(run.run_id)
        assert steps["first"].status == "succeeded"
        assert steps["second"].status == "running"  # its outcome died with the transaction
        assert "third" not in steps or steps["third"].status == "pending"
        kinds = [(e.kind, e.step) for e in sink.events()]
        assert kinds[-1] == ("step_started", "second")
        assert verified(sink, store)
        result = runner.resume(run.run_id)  # second is idempotent: run again, then third
        assert result.status == "succeeded", result.error
        effects = (tmp_path / "effects.log").read_text().split()
        assert effects == ["first", "second", "second", "third"]
        assert verified(sink, store)
    finally:
        sink.close()
        store.close()


@pytest.mark.slow
def test_runs_in_two_processes_on_one_database_form_one_verifiable_chain(
    tmp_path: Path, pg_url: str, pg_schema: str, pg_admin: psycopg.Connection, spawn
) -> None:
    """Each process appends inside its store's transactions, holding the chain lock until its
    commit: the two runs' events interleave in one chain that verifies, witnesses included."""
    rb = chain(tmp_path, 30)
    gate = ("SELECT pg_advisory_{}(hashtext('runbook-test-gate'), hashtext(%s))", (pg_schema,))
    pg_admin.execute(gate[0].format("lock"), gate[1])  # the workers start when it is released
    procs = [spawn("run_worker.py", pg_url, str(rb), f"proc-{i}") for i in range(2)]
    for proc in procs:  # both have their providers open and are about to wait on the gate
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    pg_admin.execute(gate[0].format("unlock"), gate[1])
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.split()[-1] == "succeeded", out
    sink = PostgresSink(pg_url)
    try:
        events = list(sink.events())
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert {e.actor for e in events} == {"proc-0", "proc-1"}
        assert len([e for e in events if e.kind == "step_succeeded"]) == 60
        actors = [e.actor for e in events if e.kind.startswith("step_")]
        switches = sum(a != b for a, b in itertools.pairwise(actors))
        assert switches > 2, "the two runs did not overlap: nothing contended"
    finally:
        sink.close()
    result = CliRunner().invoke(cli, ["audit", "verify", "--sink", pg_url, "--store", pg_url])
    assert result.exit_code == 0, result.output
    assert "chain intact" in result.output


# How psycopg reports a connection the server terminated (pg_terminate_backend).
LOST_CONNECTION = (
    "terminating connection",
    "connection socket closed",
    "server closed the connection",
)


def test_a_lost_connection_inside_the_transaction_fails_it_and_the_next_one_commits(
    providers: tuple[PostgresStore, PostgresSink], pg_schema: str, terminate
) -> None:
    store, sink = providers
    store.create_run(RunRecord("r1", "rb.py", "ab", "dev", "alice", "running"))
    with pytest.raises((StoreError, AuditError)) as info, store.transaction() as conn:
        store.save_step(StepRecord("r1", "a", "running"))
        assert terminate(pg_schema) >= 1  # every connection of store and sink, idle ones too
        sink.append_many([AuditEvent(kind="step_started", run_id="r1", step="a")], conn)
    # psycopg says what it saw first: the server's FATAL notice, or (when the socket closed
    # before the notice was read, as under load) the closed socket. Either names the lost link.
    assert isinstance(info.value, AuditError)
    assert any(lost in str(info.value) for lost in LOST_CONNECTION), info.value
    with store.transaction() as conn:  # the dead connections were dropped: this one commits
        store.save_step(StepRecord("r1", "a", "running"))
        sink.append_many([AuditEvent(kind="step_started", run_id="r1", step="a")], conn)
    assert store.get_steps("r1")["a"].status == "running"
    assert [e.seq for e in sink.events()] == [1]  # the sink's own pool was weeded too
    assert verified(sink, store)


def test_each_run_s_last_event_is_witnessed_in_its_own_transaction(
    tmp_path: Path, providers: tuple[PostgresStore, PostgresSink]
) -> None:
    """The events of a transition and their witness commit together: a run's end, which no
    later commit follows, is witnessed too, so cutting it from the trail is caught."""
    store, sink = providers
    runner = Runner(store=store, audit=[sink], locks=None)
    runs = [runner.run(chain(tmp_path, 2)).run_id for _ in range(2)]
    for run_id in runs:
        last = [event for event in sink.events() if event.run_id == run_id][-1]
        assert last.kind == "run_finished"
        witness = store.audit_witness(run_id, sink.chain_id)
        assert witness is not None
        assert (witness.seq, witness.hash) == (last.seq, last.hash)
