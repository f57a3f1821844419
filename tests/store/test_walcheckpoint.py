"""WAL checkpoints off the writer's thread: the policy alone, then a real store's file."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from runbook.store import walcheckpoint
from runbook.store.sqlite import SqliteStore
from runbook.store.walcheckpoint import FALLBACK, INLINE, WAKE, Plan
from runbook.testing.store_contract import make_run, make_step

# -- the policy ----------------------------------------------------------------------------------


def actions(plan: Plan, commits: int) -> list[str | None]:
    return [plan.after_commit() for _ in range(commits)]


def test_the_thread_is_woken_every_nth_commit_and_nothing_else_happens_between() -> None:
    plan = Plan(every=3, reset=2)
    assert actions(plan, 7) == [None, None, WAKE, None, None, WAKE, None]
    assert plan.started and plan.woken == 2


def test_every_resetth_checkpoint_is_finished_inline_at_the_next_commit() -> None:
    plan = Plan(every=3, reset=2)
    actions(plan, 3)
    plan.finished(1)  # not a reset one: nothing for the writer
    assert actions(plan, 1) == [None]
    plan.finished(2)
    assert actions(plan, 2) == [INLINE, WAKE]  # the 5th commit, then the 6th as always


def test_a_failed_thread_hands_checkpoints_back_once_and_for_good() -> None:
    plan = Plan(every=3, reset=2)
    actions(plan, 3)
    plan.failed()
    assert actions(plan, 1) == [FALLBACK]
    assert not plan.started and plan.fallen_back
    assert set(actions(plan, 9)) == {None}  # never woken again


def test_a_failure_the_writer_overwrote_is_still_seen_at_the_next_nth_commit() -> None:
    """The thread's two reports race the writer's reading of them; the failure is sticky."""
    plan = Plan(every=3, reset=1)
    actions(plan, 3)
    plan.finished(1)
    plan.failed()
    plan._due = None  # as if the writer had just consumed the first report
    assert actions(plan, 3) == [None, None, FALLBACK]


def test_a_failure_before_the_thread_started_needs_no_fallback() -> None:
    plan = Plan(every=3, reset=1)
    plan.failed()
    assert set(actions(plan, 6)) == {None}
    assert plan.fallen_back and not plan.started


def test_a_wal_not_restarted_for_long_gets_an_inline_checkpoint_whatever_the_thread_does() -> None:
    """The thread starved (or a reader holding frames): after hard x every commits the writer
    checkpoints itself, and again every ``every`` commits until one copies everything."""
    plan = Plan(every=3, reset=1, hard=2)
    assert actions(plan, 6) == [None, None, WAKE, None, None, INLINE]
    plan.inline_done(False)  # busy: the thread was in the middle of one
    assert actions(plan, 3) == [None, None, INLINE]
    plan.inline_done(True)
    assert actions(plan, 6) == [None, None, WAKE, None, None, INLINE]


def test_a_restart_made_on_time_keeps_the_hard_limit_away() -> None:
    plan = Plan(every=3, reset=1, hard=2)
    assert actions(plan, 3) == [None, None, WAKE]
    for _ in range(10):
        plan.finished(plan.woken)
        assert actions(plan, 1) == [INLINE]
        plan.inline_done(True)
        assert actions(plan, 2) == [None, WAKE]  # and never a hard-limit INLINE between


@pytest.mark.parametrize(("every", "reset", "hard"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_a_plan_needs_positive_counts(every: int, reset: int, hard: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Plan(every, reset, hard)


# -- a real store --------------------------------------------------------------------------------

EVERY, RESET = 5, 2


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walcheckpoint, "EVERY", EVERY)
    monkeypatch.setattr(walcheckpoint, "RESET", RESET)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runbook.db"


def threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("runbook-wal-checkpoint")]


def autocheckpoint(store: SqliteStore) -> int:
    assert store._conn is not None
    return int(store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def wal_pages(db: Path) -> int:
    return Path(f"{db}-wal").stat().st_size // 4096


def transitions(store: SqliteStore, start: int, count: int, *, catch_up: int | None = 1) -> None:
    """``count`` recorded transitions (a step's outcome and the next one's start, one commit
    each). Every ``catch_up`` commits the writer waits until the thread has made every
    checkpoint asked of it: between two waits the thread checkpoints while the writer commits,
    as in a run, but it is never starved for long, so the WAL's size is the policy's and not the
    scheduler's. ``None``: never wait."""
    for i in range(start, start + count):
        with store.transaction(sync=False):
            store.save_steps(
                [make_step(name=f"s{i}", output=i), make_step(name=f"s{i + 1}", status="running")]
            )
            store.witness_audit("run-1", "jsonl://trail", i, "h" * 64)
        checkpoints = store._checkpoints  # after the first commit: a forked child's own
        if catch_up is not None and (i - start + 1) % catch_up == 0:
            assert checkpoints.wait(checkpoints.plan.woken, timeout=30)


def test_a_store_that_writes_a_lot_keeps_a_small_wal_and_never_checkpoints_a_commit_inline(
    small: None, db: Path
) -> None:
    with SqliteStore(db, durability="process") as store:
        store.create_run(make_run())
        transitions(store, 0, 400, catch_up=2 * EVERY * RESET)
        checkpoints = store._checkpoints
        assert autocheckpoint(store) == 0
        assert checkpoints.done >= 20 and checkpoints.inline >= 5
        assert checkpoints.error is None
        # A bound, not the policy's proof: the file keeps its high-water mark, ~4 pages a
        # commit, and how many commits run beside a checkpoint is the scheduler's (one CI run
        # saw 201 pages). The writer's own checkpoints are what ``inline`` counts above; what
        # the WAL does without them is a race, shown by bench/wal.py (16,176 pages after 5,000
        # transitions against ~700), not tested.
        assert wal_pages(db) < 650
        assert len(store.get_steps("run-1")) == 401


def test_a_store_that_writes_little_starts_no_thread(small: None, db: Path) -> None:
    with SqliteStore(db) as store:
        store.create_run(make_run())
        transitions(store, 0, EVERY - 2, catch_up=None)  # with create_run: EVERY - 1 commits
        assert threads() == []
        assert autocheckpoint(store) == walcheckpoint.DEFAULT_AUTOCHECKPOINT


def test_close_stops_the_thread_and_the_last_connection_removes_the_wal(
    small: None, db: Path
) -> None:
    store = SqliteStore(db)
    store.create_run(make_run())
    transitions(store, 0, 3 * EVERY)
    assert [t.is_alive() for t in threads()] == [True]
    store.close()
    assert threads() == []
    assert not Path(f"{db}-wal").exists()
    with SqliteStore(db) as again:
        assert len(again.get_steps("run-1")) == 3 * EVERY + 1


def test_a_failed_thread_hands_the_checkpoints_back_to_sqlite(
    small: None, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> sqlite3.Connection:
        raise sqlite3.OperationalError("disk I/O error")

    with SqliteStore(db) as store:
        monkeypatch.setattr(store._checkpoints, "_open", broken)
        store.create_run(make_run())
        transitions(store, 0, EVERY)  # the thread is woken, and fails
        assert store._checkpoints.error == "OperationalError: disk I/O error"
        transitions(store, EVERY, EVERY, catch_up=None)  # the writer sees it within EVERY commits
        assert autocheckpoint(store) == walcheckpoint.DEFAULT_AUTOCHECKPOINT
        assert not store._checkpoints.running
        assert len(store.get_steps("run-1")) == 2 * EVERY + 1  # no write was lost or refused


def _write_a_lot_from_a_forked_child(store: SqliteStore) -> None:
    transitions(store, 1000, 3 * EVERY)
    assert store._checkpoints.done >= 2  # its own thread: the parent's did not come along
    store.close()


def test_a_forked_child_checkpoints_with_a_thread_of_its_own(small: None, db: Path) -> None:
    with SqliteStore(db) as store:
        store.create_run(make_run())
        transitions(store, 0, 3 * EVERY)
        child = multiprocessing.get_context("fork").Process(
            target=_write_a_lot_from_a_forked_child, args=(store,)
        )
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
        transitions(store, 2000, 3 * EVERY)  # the parent's thread still works
        assert store._checkpoints.error is None
        assert len(store.get_steps("run-1")) == 9 * EVERY + 3
