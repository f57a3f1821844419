"""``jsonl://PATH``: the default audit sink, one canonical-JSON event per line.

An append holds an exclusive ``flock`` on the file while it reads the last line (seeking from the
end, so appending stays O(1) in the file's size), writes the new line and ``fsync``s it. Any number
of processes on one host appending to one file therefore form one chain. ``flock`` is advisory and
host-local: do not share one file between hosts over NFS; give each host its own file, or use the
``sqlite://`` / ``postgresql://`` sinks.

A crash in the middle of a write leaves a torn last line. That event was never acknowledged (the
engine waits for ``append`` to return), but chaining onto garbage would hide the damage, so the
next append refuses with an ``AuditError`` that says how to repair, and ``verify`` reports it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from runbook.audit.events import GENESIS, AuditEvent, chain_after, parse_event
from runbook.audit.query import AuditQuery, explain_gap, matches
from runbook.audit.verify import BadEvent, Check, VerifyReport, verify_chain
from runbook.errors import AuditError
from runbook.urls import redact_url

log = logging.getLogger("runbook.audit")

_BLOCK = 8192


class TornLog(Exception):
    """The file does not end with a complete, parsable event (internal; surfaced as AuditError)."""


def _truthy(value: object) -> bool:
    return str(value).lower() in {"1", "true", "yes", "on"}


def parse_line(line: bytes) -> AuditEvent:
    """One stored line back into an event; ValueError when it is not one (a duplicate key, NaN
    and unknown fields included: see ``runbook.audit.canonical.loads_strict``)."""
    return parse_event(line)


class JsonlSink:
    """An append-only JSON-lines file with a hash chain; see the module docstring."""

    queryable = True

    def __init__(
        self,
        url: str,
        path: Path,
        *,
        best_effort: bool = False,
        fsync: bool = True,
        leads: bool | None = None,
    ) -> None:
        self.url = url
        self.path = path
        self.best_effort = best_effort
        self.fsync = fsync
        # Whether a run's store may commit without a sync after this trail's append (runbook.trail):
        # every append is synced, or nothing is (durability = "process", the store unsynced too).
        self.leads = fsync if leads is None else leads
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        # ((size, mtime_ns), last event) right after this object's last append: when the file is
        # still so under the lock, nobody appended since and the tail need not be re-read.
        self._tail: tuple[tuple[int, int], AuditEvent] | None = None
        # flock is per open file description: threads of one process sharing the descriptor
        # would not exclude each other, so they also take this lock.
        self._thread_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        url: str,
        best_effort: bool = False,
        fsync: object = True,
        durability: str = "power",
        **_options: Any,
    ) -> JsonlSink:
        """``durability="process"``: no ``fsync`` (a written line is in the page cache, which
        outlives a killed process but not a power loss), as ``?fsync=false``."""
        if durability not in ("power", "process"):
            raise AuditError(
                f"audit sink {url}: durability must be 'power' or 'process', got {durability!r}"
            )
        raw = url.split("://", 1)[1].split("?", 1)[0]
        if not raw:
            raise AuditError(f"audit sink {url}: missing path (jsonl://PATH)")
        synced = _truthy(fsync) and durability == "power"
        return cls(
            url,
            Path(raw).expanduser(),
            best_effort=_truthy(best_effort),
            fsync=synced,
            leads=synced or durability == "process",
        )

    @property
    def chain_id(self) -> str:
        """The file, by its real path (symlinks and ``..`` resolved): what the run store's
        witness is keyed on, so the same file reached another way is checked against it."""
        return f"jsonl://{self.path.resolve()}"

    def missing(self) -> str | None:
        """Why the trail has no events at all, when the reason is that the file is gone."""
        return None if self.path.exists() else f"the file {self.path} does not exist"

    # -- writing ------------------------------------------------------------------------------

    def _current_inode(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _descriptor(self) -> int:
        """The append descriptor: the open one, else the file at the path opened (created, with
        its folders, if missing). Whether the open one is still the file at the path (not rotated
        or removed under us) is for ``append_many`` to check, under the lock."""
        if self._fd is not None:
            return self._fd
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if created and self.fsync:
            # A new file's name is durable only once its directory is synced.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        st = os.fstat(fd)
        self._fd, self._inode = fd, (st.st_dev, st.st_ino)
        return fd

    def append(self, event: AuditEvent) -> AuditEvent:
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        """Chain ``events`` and write them with one ``write`` and one ``fsync``, under one lock.

        The events of one state transition (a step's outcome, a lock released, the next step's
        start) are acknowledged together: none of them before the ``fsync`` returns. A crash
        before it may leave a prefix of the lines (each complete line a valid event: the chain
        stays verifiable) or a torn last line (refused and reported, as for a single event).
        """
        if not events:
            return []
        with self._thread_lock:
            try:
                while True:
                    fd = self._descriptor()
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if self._current_inode() == self._inode:
                        break
                    # Rotated or removed (since our last append, or between our open and the
                    # lock): append to the file now at the path instead.
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    self._close_fd()
                try:
                    return self._append_locked(fd, events)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except AuditError:
                raise
            except (OSError, ValueError, TypeError) as exc:
                raise AuditError(
                    f"audit sink {redact_url(self.url)} failed: {type(exc).__name__}: {exc}"
                ) from exc

    def _append_locked(self, fd: int, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        st = os.fstat(fd)
        size = st.st_size
        try:
            last = self._last_known(fd, (size, st.st_mtime_ns))
        except TornLog as exc:
            problem, good_size = exc.args
            url = redact_url(self.url)
            raise AuditError(
                f"audit sink {url} refuses to append: {problem}. A line cut short by a crash is "
                "an event that was never acknowledged; check with `runbook audit verify --sink "
                f"{url}`, then remove the damaged tail: truncate -s {good_size} {self.path}"
            ) from None
        seq = (last.seq or 0) if last else 0
        prev = last.hash if last and last.hash else GENESIS
        stored = chain_after(seq, prev, events)
        data = ("\n".join([event.stored_line() for event in stored]) + "\n").encode()
        try:
            written = os.write(fd, data)
            if written < len(data):  # a short write (a signal, a full disk): write the rest
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        except OSError:
            # Leave no half line behind (disk full...): the events were not stored, say so.
            self._tail = None
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
        after = os.fstat(fd)
        self._tail = ((after.st_size, after.st_mtime_ns), stored[-1])
        return stored

    def _last_known(self, fd: int, stamp: tuple[int, int]) -> AuditEvent | None:
        """The last event: the one this object wrote when the file is as it left it (same inode,
        size and mtime, seen under the lock), else read back from the end of the file."""
        tail = self._tail
        if tail is not None and tail[0] == stamp:
            return tail[1]
        return _last_event(fd, stamp[0])

    # -- reading ------------------------------------------------------------------------------

    def _lines(self) -> Iterator[tuple[int, bytes, bool]]:
        """(line number, bytes without newline, complete?) for every line, streamed."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AuditError(f"audit sink {redact_url(self.url)} cannot be read: {exc}") from exc
        with handle:
            for number, line in enumerate(handle, start=1):
                complete = line.endswith(b"\n")
                yield number, line.rstrip(b"\n"), complete

    def events_after(self, seq: int) -> list[AuditEvent]:
        """The events after number ``seq``, in file order, read backwards from the end of the
        file: a run's last transitions (what ``resume`` rolls the store forward from,
        runbook.trail) without reading a trail of millions of events. Unreadable lines are
        skipped, as in ``events``; ``verify`` reports them."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise AuditError(f"audit sink {redact_url(self.url)} cannot be read: {exc}") from exc
        found: list[AuditEvent] = []
        try:
            pos, rest = os.fstat(fd).st_size, b""
            while pos > 0:
                size = min(_BLOCK, pos)
                pos -= size
                lines = (os.pread(fd, size, pos) + rest).split(b"\n")
                rest = lines[0] if pos > 0 else b""  # may be cut: completed by the next block
                for line in reversed(lines if pos == 0 else lines[1:]):
                    event = _parsed(line)
                    if event is None:
                        continue
                    if isinstance(event.seq, int) and event.seq <= seq:
                        return found[::-1]
                    found.append(event)
        finally:
            os.close(fd)
        return found[::-1]

    def head(self) -> AuditEvent | None:
        """The last event, read from the end of the file (no lock: a reader)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(f"audit sink {redact_url(self.url)} cannot be read: {exc}") from exc
        try:
            return _last_event(fd, os.fstat(fd).st_size)
        except TornLog as exc:
            raise AuditError(
                f"audit sink {redact_url(self.url)}: {exc.args[0]}; run `runbook audit verify`"
            ) from None
        finally:
            os.close(fd)

    def events(self, query: AuditQuery | None = None) -> Iterator[AuditEvent]:
        """Events in file order; unreadable lines are skipped here (with a warning) and reported
        by ``verify``, so the trail can still be read after damage."""
        query = query or AuditQuery()
        count = 0
        for number, line, _ in self._lines():
            try:
                event = parse_line(line)
            except (ValueError, TypeError) as exc:
                log.warning(
                    "%s line %d is not an audit event (%s); skipped", self.path, number, exc
                )
                continue
            if matches(query, event):
                yield event
                count += 1
                if query.limit and count >= query.limit:
                    return

    def verify(self, checks: Sequence[Check] = ()) -> VerifyReport:
        seen: list[tuple[int, AuditEvent]] = []  # the last two (line, event) handed to the chain

        def stream() -> Iterator[AuditEvent]:
            for number, line, complete in self._lines():
                try:
                    if not complete:
                        raise ValueError("the line is incomplete (a write was cut short)")
                    event = parse_line(line)
                except (ValueError, TypeError) as exc:
                    after = (seen[-1][1].seq or 0) if seen else 0
                    raise BadEvent(
                        after + 1,
                        f"line {number} (after event {after}) is not an audit event: {exc}",
                    ) from None
                seen[:] = [*seen[-1:], (number, event)]
                yield event

        events = stream()
        report = verify_chain(events, checks)
        if report.ok or not seen:
            return report
        number, failing = seen[-1]
        if failing.seq != report.seq:  # a garbled line, or a check's finding past the end
            return report
        previous = (seen[0][1].seq or 0) if len(seen) > 1 else 0
        try:
            report = explain_gap(report, failing, previous, events)
        except BadEvent:
            pass
        return replace(report, problem=f"{report.problem} [line {number}]")

    def close(self) -> None:
        with self._thread_lock:
            self._close_fd()

    def _close_fd(self) -> None:
        self._tail = None
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd, self._inode = None, None

    def __repr__(self) -> str:
        return f"JsonlSink({self.url!r})"


def _parsed(line: bytes) -> AuditEvent | None:
    """A line's event, or None for an empty or unreadable one (a torn last line included)."""
    if not line:
        return None
    try:
        return parse_line(line)
    except (ValueError, TypeError):
        return None


def _last_event(fd: int, size: int) -> AuditEvent | None:
    """The last line's event, read backwards in blocks; TornLog if the file ends mid-event."""
    if size == 0:
        return None
    tail = b""
    pos = size
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        tail = os.pread(fd, step, pos) + tail
        # Need the full last line: a newline before it (or the start of the file).
        body = tail[:-1] if tail.endswith(b"\n") else tail
        if b"\n" in body or pos == 0:
            break
    if not tail.endswith(b"\n"):
        start = tail.rfind(b"\n") + 1
        raise TornLog(
            f"{size - (pos + start)} bytes at the end of the file do not form a complete line",
            pos + start,
        )
    body = tail[:-1]
    start = body.rfind(b"\n") + 1
    try:
        event = parse_line(body[start:])
    except (ValueError, TypeError) as exc:
        raise TornLog(f"the last line is not an audit event ({exc})", pos + start) from None
    if not isinstance(event.seq, int) or not event.hash:
        raise TornLog("the last line is an event without seq/hash", pos + start)
    return event
