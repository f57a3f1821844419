"""The recorder's joined and batched writes when something refuses or misbehaves
(runbook.recorder): a run store that can no longer witness the trail, a trail in the store's own
file that refuses an event with no step row beside it, a run with no store at all rolling back,
a run nobody audits taking a lock, an audit refusing to record a failed notification, two runs
taking the same audit log's pending witness, a sink that reports nothing back.

A refusal ends the way an operator must be able to rely on: the run stops before the next side
effect, what ran is undone, the result, the run row and the trail say why (exit 1)."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from runbook import Runner, load
from runbook.audit.memory import MemorySink
from runbook.errors import AuditError, StoreError
from runbook.store.memory import MemoryStore
from runbook.testing.fakes import FakeNotifier

STAGED = """
from runbook import rollback, step

DONE = []

@step(reversible=True)
def first():
    DONE.append("first")
    return 1

@rollback(first)
def undo_first(first):
    DONE.append("undo first")

@step
def second(first):
    DONE.append("second")
    return 2
"""


def _runner(store: Any, **kw: Any) -> Runner:
    kw.setdefault("locks", f"memory://refusals-{uuid.uuid4().hex}")
    return Runner(store=store, actor="alice", entry_points=False, **kw)


class UnwitnessingStore(MemoryStore):
    """A run store (no transactions) that stops accepting the audit's witnesses past event
    ``upto`` (its witness table read-only, say) while it still stores step rows."""

    def __init__(self, upto: int) -> None:
        super().__init__(f"memory://unwitnessing-{uuid.uuid4().hex}")
        self.upto = upto

    def witness_audit(self, run_id: str, chain: str, seq: int, hash: str) -> None:
        if seq > self.upto:
            raise StoreError("witness table is read-only")
        super().witness_audit(run_id, chain, seq, hash)


def test_a_store_that_cannot_witness_run_started_stops_the_run_before_any_step(write_runbook):
    rb = load(write_runbook(STAGED))
    store, sink = UnwitnessingStore(upto=0), MemorySink()
    result = _runner(store, audit=[sink]).run(rb)
    assert rb.module.DONE == []  # nothing ran with a trail the store could not vouch for
    assert result.status == "failed" and result.exit_code == 1
    assert "event 1 is stored but the run store could not witness it" in (result.error or "")
    (run,) = store.list_runs()
    assert (run.status, run.error) == ("failed", result.error)
    assert [e.kind for e in sink.events()] == ["run_started", "run_finished"]


def test_a_store_that_stops_witnessing_mid_run_still_undoes_what_ran(write_runbook):
    """The witness of first's outcome and second's start (one append to ``memory://``, which
    takes a start with the held outcomes) is refused when second is about to start: second
    never runs, and first is undone although the store refuses the rollback's witnesses too
    (that refusal used to escape the rollback: the run raised AuditError with first not
    undone)."""
    rb = load(write_runbook(STAGED))
    store, sink = UnwitnessingStore(upto=2), MemorySink()
    result = _runner(store, audit=[sink]).run(rb)
    assert rb.module.DONE == ["first", "undo first"]
    assert result.status == "rolled_back" and result.exit_code == 1
    assert "event 4 is stored but the run store could not witness it" in (result.error or "")
    assert result.steps["first"].rollback == "rolled_back"
    (run,) = store.list_runs()
    assert (run.status, run.error) == ("rolled_back", result.error)
    # the outcome rows are stored though their witnesses were refused
    assert store.get_steps(run.run_id)["first"].status == "rolled_back"
    # second's start reached the sink with first's outcome, so the sink also says it ended
    # (it never ran: RunRecorder._end_unstarted), after the rollback.
    assert [(e.kind, e.step) for e in sink.events()] == [
        ("run_started", None),
        ("step_started", "first"),
        ("step_succeeded", "first"),
        ("step_started", "second"),
        ("rollback_started", "first"),
        ("rollback_succeeded", "first"),
        ("step_failed", "second"),
        ("run_finished", None),
    ]


def test_a_start_whose_witness_is_refused_is_neither_audited_nor_stored_as_running(
    write_runbook, tmp_path
):
    """second's start is the write whose store part the store refuses (it cannot witness the
    trail): second does not run, so nothing may say it started. Before, its step_started went
    to the trail and its row stayed 'running' in a run that had ended rolled back: a started
    step with neither an outcome nor an interruption (the invariant the chaos test checks)."""
    from runbook.audit.jsonl import JsonlSink

    rb = load(write_runbook(STAGED))
    store = UnwitnessingStore(upto=1)
    sink = JsonlSink(f"jsonl://{tmp_path / 'audit.jsonl'}", tmp_path / "audit.jsonl")
    result = _runner(store, audit=[sink]).run(rb)
    assert rb.module.DONE == ["first", "undo first"]
    assert result.status == "rolled_back" and result.exit_code == 1
    kinds = [(e.kind, e.step) for e in sink.events(None)]
    assert ("step_started", "second") not in kinds, kinds
    (run,) = store.list_runs()
    assert "second" not in store.get_steps(run.run_id)  # never stored as running
    started = {s for k, s in kinds if k == "step_started"}
    ended = {s for k, s in kinds if k in ("step_succeeded", "step_failed", "step_interrupted")}
    assert started <= ended


LED = """
from runbook import rollback, step

DONE = []
STORE = None

@step(reversible=True)
def first():
    DONE.append("first")
    STORE.refuse = True  # from the commit of second's start on
    return 1

@rollback(first)
def undo_first(first):
    (run,) = STORE.list_runs()
    DONE.append("undo first, stored " + STORE.get_steps(run.run_id)["first"].status)

@step
def second(first):
    DONE.append("second")
"""


def test_a_start_whose_witness_a_led_store_refuses_does_not_run(write_runbook, tmp_path):
    """The CLI default: a synced JSONL trail leads a SQLite store, and the store's commit of
    second's start refuses its witness of the trail (rolled back, so no 'running' row either).
    second must not run, and first's outcome, held for that commit, is stored on its own.
    Before, the leading write dropped that refusal: second ran with no row in the store and no
    witness of its events."""
    from runbook.audit.jsonl import JsonlSink
    from runbook.store.sqlite import SqliteStore

    class Unwitnessing(SqliteStore):
        refuse = False

        def witness_audit(self, run_id: str, chain: str, seq: int, hash: str) -> None:
            if self.refuse:
                raise StoreError("witness table is read-only")
            super().witness_audit(run_id, chain, seq, hash)

    store = Unwitnessing(tmp_path / "runs.db")
    trail = tmp_path / "audit.jsonl"
    rb = load(write_runbook(LED))
    rb.module.STORE = store
    result = _runner(store, audit=[f"jsonl://{trail}"]).run(rb)
    assert rb.module.DONE == ["first", "undo first, stored succeeded"]
    assert result.status == "rolled_back" and result.exit_code == 1
    assert "could not witness it: witness table is read-only" in (result.error or "")
    (run,) = store.list_runs()
    second = store.get_steps(run.run_id).get("second")  # ended as never started, if at all
    assert second is None or (second.status, second.reason) == (
        "cancelled",
        "not started: its start could not be recorded",
    )
    kinds = [(e.kind, e.step) for e in JsonlSink.open(f"jsonl://{trail}").events(None)]
    started = {s for k, s in kinds if k == "step_started"}
    ended = {s for k, s in kinds if k in ("step_succeeded", "step_failed", "step_interrupted")}
    assert started <= ended, kinds  # the trail took second's start: it also says it never ran
    assert ("step_succeeded", "second") not in kinds


def test_a_start_refused_by_a_joined_trail_is_not_stored_as_running(write_runbook, tmp_path):
    """The same with a sqlite:// trail in the store's own file refusing second's step_started
    inside the store's transaction: first's outcome row is written on its own, second's
    'running' row is not (it never ran), and the trail has no start without an outcome."""
    from runbook.audit.sqlite import SqliteSink
    from runbook.store.sqlite import SqliteStore

    class Refusing(SqliteSink):
        def append_many(self, events: Any, conn: Any = None) -> Any:
            if any((e.kind, e.step) == ("step_started", "second") for e in events):
                raise AuditError("audit sink refused step_started: disk full")
            return super().append_many(events, conn)

    db = tmp_path / "runs.db"
    store = SqliteStore(db)
    sink = Refusing(f"sqlite:///{db}", str(db))
    rb = load(write_runbook(STAGED))
    result = _runner(store, audit=[sink]).run(rb)
    assert rb.module.DONE == ["first", "undo first"]
    assert result.status == "rolled_back" and result.exit_code == 1
    assert result.error == "AuditError: audit sink refused step_started: disk full"
    (run,) = store.list_runs()
    steps = store.get_steps(run.run_id)
    assert "second" not in steps and steps["first"].status == "rolled_back"
    kinds = [(e.kind, e.step) for e in sink.events(None)]
    assert ("step_started", "second") not in kinds, kinds


def test_a_joined_trail_refusing_run_started_stops_the_run_before_any_step(write_runbook, tmp_path):
    """A sqlite:// trail in the store's own file refuses run_started inside the store's
    transaction: that transaction (no step row in it) is rolled back, nothing runs."""
    from runbook.audit.sqlite import SqliteSink
    from runbook.store.sqlite import SqliteStore

    class Refusing(SqliteSink):
        def append_many(self, events: Any, conn: Any = None) -> Any:
            if any(e.kind == "run_started" for e in events):
                raise AuditError("audit sink refused run_started: disk full")
            return super().append_many(events, conn)

    db = tmp_path / "runs.db"
    store = SqliteStore(db)
    rb = load(write_runbook(STAGED))
    result = _runner(store, audit=[Refusing(f"sqlite:///{db}", str(db))]).run(rb)
    assert rb.module.DONE == []
    assert result.status == "failed" and result.exit_code == 1
    assert result.error == "AuditError: audit sink refused run_started: disk full"
    (run,) = store.list_runs()
    assert (run.status, run.error) == ("failed", result.error)
    assert store.get_steps(run.run_id) == {}


def test_a_run_without_a_store_still_rolls_back_and_audits_it(write_runbook):
    failing = STAGED.replace('    DONE.append("second")\n', '    raise RuntimeError("broke")\n')
    rb = load(write_runbook(failing))
    sink = MemorySink()
    result = _runner(None, audit=[sink]).run(rb)
    assert rb.module.DONE == ["first", "undo first"]
    assert result.status == "rolled_back" and result.exit_code == 1
    assert [(e.kind, e.step) for e in sink.events()][-3:] == [
        ("rollback_started", "first"),
        ("rollback_succeeded", "first"),
        ("run_finished", None),
    ]


def test_a_run_nobody_audits_takes_and_frees_its_step_lock(write_runbook):
    """No sink, no listener: no lock events are built, but the lock is taken and freed."""
    locks = f"memory://quiet-{uuid.uuid4().hex}"
    source = """
from runbook import step

@step(lock="db")
def migrate(ctx):
    return ctx.fencing_token
"""
    rb = load(write_runbook(source))
    first = _runner(None, audit=(), locks=locks).run(rb)
    assert first.status == "succeeded", first.error
    assert not [e for e in first.audit if e.kind.startswith("lock_")]
    assert isinstance(first.steps["migrate"].output, int)  # it ran holding the lock
    again = _runner(None, audit=(), locks=locks).run(rb)  # lock_timeout 0: refused if held
    assert again.status == "succeeded", again.error
    assert again.steps["migrate"].output > first.steps["migrate"].output


def test_a_refused_notification_failed_event_leaves_the_run_and_the_log_intact(
    write_runbook, caplog
):
    """A channel that is down is recorded as notification_failed; when a required sink
    refuses even that, the run still ends as its steps did and the failure is in the log."""

    class NoNotes(MemorySink):
        def append(self, event: Any) -> Any:
            if event.kind == "notification_failed":
                raise AuditError("audit sink refused notification_failed: disk full")
            return super().append(event)

    channel = FakeNotifier()
    channel.fail_with = RuntimeError("channel is down")
    sink = NoNotes()
    rb = load(write_runbook(STAGED))
    runner = _runner(
        None,
        audit=[sink],
        plugins=[channel.plugin],
        notify=[{"to": "fake://ops", "on": ["run_finished"]}],
    )
    with caplog.at_level(logging.WARNING, logger="runbook.notify"):
        result = runner.run(rb)
    assert result.status == "succeeded", result.error
    assert rb.module.DONE == ["first", "second"]
    assert "notification_failed" not in [e.kind for e in sink.events()]
    assert "channel is down" in caplog.text


class _Gates:
    def __init__(self) -> None:
        self.b_running = threading.Event()
        self.a_blocked = threading.Event()
        self.b_done = threading.Event()


class _SlowDisk(MemoryStore):
    """Holds run A's commit at its first witness (the loop's thread, once B's step runs) until
    run B, in its worker thread, has written through the same two audit logs."""

    def __init__(self, gates: _Gates) -> None:
        super().__init__(f"memory://slow-{uuid.uuid4().hex}")
        self.gates = gates

    def witness_audit(self, run_id: str, chain: str, seq: int, hash: str) -> None:
        gates = self.gates
        on_loop = threading.current_thread() is threading.main_thread()
        if on_loop and gates.b_running.is_set() and not gates.a_blocked.is_set():
            gates.a_blocked.set()
            assert gates.b_done.wait(10), "run B never wrote"
        super().witness_audit(run_id, chain, seq, hash)


def test_two_runs_sharing_audit_logs_write_each_witness_once_and_both_go_on(write_runbook):
    """``run_many``: both runs write through the same audit logs, whose pending witnesses
    either run may take. Run A's commit found both logs with one due and wrote the first; before
    it takes the second, run B's event (from B's worker thread) takes and writes it. A then has
    none left there: it goes on, B too, and every witness in the store matches an event of its
    trail (a verify of each chain passes)."""
    from runbook.audit.verify import verify_sink, witness_check

    gates = _Gates()
    a = write_runbook(
        "from runbook import step\n\n@step\ndef a1(gates):\n"
        "    assert gates.b_running.wait(10), 'run B never started'\n"
        "    return 1\n\n"
        "@step\ndef a2(a1):\n    return a1 + 1\n",
        name="a",
    )
    b = write_runbook(
        "from runbook import step\n\n@step\ndef b1(ctx, gates):\n"
        "    gates.b_running.set()\n"
        "    assert gates.a_blocked.wait(10), 'run A never wrote'\n"
        "    ctx.record_change('dns', before='old', after='new')\n"
        "    gates.b_done.set()\n"
        "    return 'b'\n",
        name="b",
    )
    store, sinks = _SlowDisk(gates), [MemorySink("memory://one"), MemorySink("memory://two")]
    runner = _runner(store, audit=sinks, resources={"gates": gates})
    first, second = runner.run_many([a, b])
    assert (first.status, second.status) == ("succeeded", "succeeded"), (first.error, second.error)
    assert first.steps["a2"].output == 2 and second.steps["b1"].output == "b"
    assert gates.b_done.is_set()  # the interleaving happened
    for sink, log in zip(sinks, runner.sinks, strict=True):
        witnesses = store.audit_witnesses(log.chain_id)
        assert {w.run_id for w in witnesses} == {first.run_id, second.run_id}
        report = verify_sink(sink, [witness_check(store, log.chain_id)])
        assert report.ok, report


def test_a_sink_whose_batch_write_reports_nothing_back_leaves_the_runs_record_whole(
    write_runbook,
):
    """A plugin sink that stores a batch but returns no events from ``append_many`` (it keeps
    no chain of its own to report): the run's events, in its result and for its listeners, are
    those the next sink stored, chained, none missing."""

    class Forwarder(MemorySink):
        def append_many(self, events: Any) -> list[Any]:
            super().append_many(events)
            return []

    forwarder, memory = Forwarder(), MemorySink()
    rb = load(write_runbook(STAGED))
    result = _runner(None, audit=[forwarder, memory]).run(rb)
    assert result.status == "succeeded", result.error
    assert result.audit == list(memory.events())
    assert [e.seq for e in result.audit] == list(range(1, len(result.audit) + 1))
    assert [e.kind for e in result.audit] == [e.kind for e in forwarder.events()]
