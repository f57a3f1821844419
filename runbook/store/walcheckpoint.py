"""WAL checkpoints off the writer's thread, so that no step's commit pays for one.

SQLite checkpoints a WAL inline: the commit that takes the WAL past ``wal_autocheckpoint`` pages
(1,000 by default) copies every frame into the database file and, under ``synchronous`` NORMAL or
FULL, syncs the WAL and the database before it returns. A run commits once per step, ~3.3 pages
each, so one step in ~300 paid 5-7 ms (bench/wal.py). SQLite documents the remedy: turn the
automatic checkpoint off on the writer and checkpoint from another thread, here with ``PASSIVE``
(it never waits for a reader or a writer) on the thread's own connection, whose ``synchronous``
is the store's, so a checkpoint syncs exactly what an inline one would.

A checkpoint running beside a writer never catches up with it: new frames arrive while it
copies, so the WAL is never found fully copied when a transaction begins, which is when SQLite
restarts it from the top, and the file would grow for as long as the run writes. So every
``RESET``-th checkpoint is followed, on the writer's thread between two of its transactions, by
one more ``PASSIVE`` checkpoint that copies only what the thread left (the frames of the few
commits made while it ran); the next transaction then restarts the WAL. The writer pays two
syncs every ``EVERY x RESET`` commits instead of a whole checkpoint every ~300, and the WAL stays
near ``EVERY x RESET`` commits of frames, under the 1,000 pages at which the *other* connections
to the file (locks, ``runbook approve``) would checkpoint in their own commits. Should the thread
fall behind (starved, or a reader holding old frames), the writer checkpoints itself after
``HARD x EVERY`` commits without a restart, as SQLite would have.

A store that commits less than ``EVERY`` times (``runbook approve``, ``runbook runs``) starts no
thread: its commits checkpoint as SQLite always does. If the thread fails (a disk error, a file
gone), the writer's automatic checkpoint is turned back on within ``EVERY`` commits: the WAL
never grows without bound because a thread died. The policy (:class:`Plan`) is separate from
the I/O; the thread is started lazily and joined by ``close``.

A thread and ``fork`` do not mix: a child forked while the thread is inside SQLite could inherit
a mutex nobody will release. runbook itself never forks (its subprocesses exec at once); a
program that forks a process which then writes to the same store gets, in the child, a fresh
checkpointer and connection (``SqliteStore._forked``; tests/store/test_walcheckpoint.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

EVERY = 150  # writer commits between two checkpoints (~500 pages)
RESET = 1  # every RESET-th checkpoint is finished inline, so the WAL restarts from the top
HARD = 3  # after HARD x EVERY commits without a restart, the writer checkpoints itself
DEFAULT_AUTOCHECKPOINT = 1000  # SQLite's own, restored when the thread fails

WAKE, INLINE, FALLBACK = "wake", "inline", "fallback"


class Plan:
    """What the writer does after a commit: nothing (the common case), wake the thread, finish
    the thread's checkpoint inline, or fall back to SQLite's automatic checkpoints.

    Pure bookkeeping, no I/O. The thread reports with :meth:`finished` and :meth:`failed`, from
    its own thread; each report is one attribute set, and a failure is sticky (``_failed``), so
    a report the writer overwrites is still seen at its next ``every``-th commit. The writer
    reports its own checkpoints with :meth:`inline_done`: a WAL not restarted for
    ``hard x every`` commits (the thread starved, a reader holding old frames) gets an inline
    checkpoint whatever the thread does, tried again ``every`` commits later until one copies
    everything."""

    __slots__ = (
        "_due",
        "_failed",
        "commits",
        "every",
        "fallen_back",
        "hard",
        "reset",
        "since_restart",
        "started",
        "woken",
    )

    def __init__(self, every: int = EVERY, reset: int = RESET, hard: int = HARD) -> None:
        if every < 1 or reset < 1 or hard < 1:
            raise ValueError("every, reset and hard must be at least 1")
        self.every, self.reset, self.hard = every, reset, hard * every
        self.commits = 0
        self.since_restart = 0  # commits since an inline checkpoint copied everything
        self.woken = 0  # checkpoints asked of the thread
        self.started = False  # the thread exists and the writer's automatic checkpoint is off
        self.fallen_back = False  # SQLite's automatic checkpoint is back on, for good
        self._due: str | None = None  # set by a report: look at the next commit
        self._failed = False

    def after_commit(self) -> str | None:
        commits = self.commits = self.commits + 1
        since = self.since_restart = self.since_restart + 1
        if commits % self.every and self._due is None and since < self.hard:
            return None
        if self._failed or self.fallen_back:
            if self.fallen_back or not self.started:
                self.fallen_back = True
                return None
            self.fallen_back, self.started = True, False
            return FALLBACK
        if self._due is not None or (self.started and since >= self.hard):
            self._due = None
            return INLINE
        self.started = True
        self.woken += 1
        return WAKE

    def finished(self, number: int) -> None:
        """The thread's ``number``-th checkpoint (1-based) copied everything it could."""
        if number % self.reset == 0:
            self._due = INLINE

    def inline_done(self, complete: bool) -> None:
        """The writer's checkpoint copied the whole WAL (the next transaction restarts it), or
        not: then it is tried again ``every`` commits later."""
        self.since_restart = 0 if complete else max(0, self.hard - self.every)

    def failed(self) -> None:
        self._failed = True
        self._due = FALLBACK


class WalCheckpointer:
    """The checkpoint thread of one writer connection, and what the writer does after a commit.

    ``committed`` is called by the writer after each of its write commits, on the thread that
    holds the writer's lock: it costs an increment and a comparison, except every ``EVERY``-th
    time. ``open`` makes the thread's connection (the store's ``connect``), on the thread."""

    def __init__(self, path: Path, open: Callable[[], sqlite3.Connection]) -> None:
        self.path = path
        self._open = open
        self.plan = Plan(EVERY, RESET, HARD)  # read here, so a test or bench may set them
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        # The thread's connection, held here rather than in the thread's frame: a forked child
        # keeps this object (and so the connection) alive, never closing what it inherited.
        self._conn: sqlite3.Connection | None = None
        self.done = 0  # checkpoints the thread made
        self.served = 0  # wakes answered (several asked before the thread wakes get one)
        self.inline = 0  # checkpoints the writer made after the thread's
        self.error: str | None = None  # why the thread stopped, if it failed
        self._progress = threading.Condition()

    def committed(self, conn: sqlite3.Connection) -> None:
        action = self.plan.after_commit()
        if action is None:
            return
        if action == WAKE:
            if self._thread is None and not self._start(conn):
                return
            self._wake.set()
        elif action == INLINE:
            self.inline += 1
            self.plan.inline_done(_checkpoint(conn))
        else:  # FALLBACK: the thread is gone; SQLite checkpoints inline again
            _autocheckpoint(conn, DEFAULT_AUTOCHECKPOINT)

    def _start(self, conn: sqlite3.Connection) -> bool:
        if not _autocheckpoint(conn, 0):  # left on: SQLite goes on checkpointing inline
            self.plan.started = False
            self.plan.failed()
            return False
        self._thread = threading.Thread(
            target=self._loop, name=f"runbook-wal-checkpoint {self.path.name}", daemon=True
        )
        self._thread.start()
        return True

    def _loop(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                asked = self.plan.woken
                if self._closed:
                    return
                if self._conn is None:
                    self._conn = self._open()
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                with self._progress:
                    self.done += 1
                    self.served = asked
                    if not busy:
                        self.plan.finished(self.done)
                    self._progress.notify_all()
        except Exception as exc:  # the writer turns SQLite's own checkpoints back on
            with self._progress:
                self.error = f"{type(exc).__name__}: {exc}"
                self.plan.failed()
                self._progress.notify_all()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def wait(self, woken: int, timeout: float) -> bool:
        """Until the thread has answered the first ``woken`` wakes, or failed (for tests)."""
        with self._progress:
            return self._progress.wait_for(
                lambda: self.served >= woken or self.error is not None, timeout
            )

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread after the checkpoint it may be making (the writer's connection,
        closed next, checkpoints the rest if it is the file's last)."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _checkpoint(conn: sqlite3.Connection) -> bool:
    """A PASSIVE checkpoint on the writer's connection: whether it copied the whole WAL. Busy
    (the thread is checkpointing), stopped short by a reader, or failed, it only means the WAL
    is not restarted this time; the commit before it stands."""
    try:
        busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:
        return False
    return not busy and log == copied


def _autocheckpoint(conn: sqlite3.Connection, pages: int) -> bool:
    try:
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}").fetchone()
    except sqlite3.Error:
        return False
    return True
