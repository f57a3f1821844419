"""File descriptors 1 and 2 under the run's mask: what ``sys.stdout`` cannot see.

``runbook.stdio`` masks the Python streams; bytes written to the descriptors themselves
(``os.write(1, ...)``, a C library, a child process started without ``shell`` that inherits
them) would pass it by. While a run with secrets is active, each descriptor is pointed at a
pipe, and one thread per pipe reads it, masks whole lines (a partial line once nothing more has
come for ``PARTIAL`` seconds: a prompt) and writes them where the descriptor pointed before.

The order of the bytes on one descriptor is kept. ``sync`` waits until everything written to
the pipe so far is out (a marker through the pipe, so bytes written by any process before it
are masked with the masks of that moment); the last run to end syncs, then points the
descriptors back. A child process still holding the pipe after that (a daemon a step left
behind) keeps its pipe: the thread stays until the child closes it, masking with the masks the
pipe had when it was put back. What the terminal says of itself (``isatty``, its size) is asked
of the descriptor as it was.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable, Iterable, Sequence

Mask = Callable[[str], str]
PARTIAL = 0.05  # seconds a partial line waits for its end before it is written as it is
SYNC_TIMEOUT = 5.0  # a reader that does not answer a sync by then is not waited for
LONGEST = 1 << 16  # a line held longer than this goes out but for its last KEEP bytes
KEEP = 4096  # (a secret longer than that, cut there, would not be masked whole)


def masked_text(text: str, masks: Iterable[Mask]) -> str:
    for mask in masks:
        text = mask(text)
    return text


def masked_bytes(data: bytes, masks: Iterable[Mask], encoding: str = "utf-8") -> bytes:
    """``data`` with every mask applied to its text; bytes that are not text in ``encoding``
    (a binary blob) pass unchanged (``surrogateescape``), and so does ``data`` if no mask
    changed it."""
    text = data.decode(encoding, "surrogateescape")
    masked = masked_text(text, masks)
    return data if masked == text else masked.encode(encoding, "surrogateescape")


class Pump:
    """One descriptor redirected through a masking pipe (``start``), then put back (``stop``)."""

    def __init__(self, fd: int, masks: Callable[[], Sequence[Mask]]) -> None:
        self.fd = fd
        self._masks = masks  # the live masks; fixed at ``stop`` for what comes after
        self._fixed: Sequence[Mask] | None = None
        self.saved = -1  # where ``fd`` pointed before: the terminal, a file, the parent's pipe
        self._read = -1
        self._marker = b"\x00runbook-sync-" + os.urandom(8).hex().encode() + b"\x00"
        self._synced = threading.Condition()
        self._asked = 0  # syncs written to the pipe
        self._answered = 0  # syncs the reader has passed
        self._broken = False  # ``saved`` refused a write: what comes is read and dropped
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Point ``fd`` at the pipe; False (nothing changed) when ``fd`` is not open."""
        try:
            self.saved = os.dup(self.fd)
        except OSError:
            return False
        self._read, write = os.pipe()
        os.dup2(write, self.fd)  # inheritable: a child process writes into the pipe too
        os.close(write)
        self._thread = threading.Thread(
            target=self._run, name=f"runbook-mask-fd{self.fd}", daemon=True
        )
        self._thread.start()
        return True

    def isatty(self) -> bool:
        return os.isatty(self.saved)

    def terminal_size(self) -> os.terminal_size:
        return os.get_terminal_size(self.saved)

    def sync(self) -> bool:
        """Wait until everything written to the pipe before this call is written out."""
        with self._synced:
            self._asked += 1
            want = self._asked
        try:
            os.write(self.fd, self._marker)  # shorter than PIPE_BUF: never split
        except OSError:
            return False
        with self._synced:
            return self._synced.wait_for(lambda: self._answered >= want, SYNC_TIMEOUT)

    def stop(self) -> None:
        """Write out what is in the pipe (masked as it is now), then point ``fd`` back."""
        self.sync()
        self._fixed = tuple(self._masks())
        os.dup2(self.saved, self.fd)
        # The reader ends at the pipe's end of file: now, unless a child process holds it.

    def forget(self) -> None:
        """In a forked child: close this process's copies of the parent's read end and saved
        descriptor (a dead parent then gives the child EPIPE, not a pipe nobody reads)."""
        for fd in (self._read, self.saved):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        read = self._read
        try:
            self._pump(read)
        except Exception as exc:  # a bug here must neither show a secret nor block the writers
            self._write(f"[runbook: output not shown from here: {type(exc).__name__}]\n".encode())
            self._broken = True
            with contextlib.suppress(OSError):
                while data := os.read(read, 65536):  # dropped; a sync is still answered
                    self._answer(data.count(self._marker))
        finally:
            os.close(read)
            os.close(self.saved)

    def _pump(self, read: int) -> None:
        waiting = select.poll()  # not select(): a descriptor past FD_SETSIZE in a busy process
        waiting.register(read, select.POLLIN)
        pending = b""
        while True:
            if pending and not waiting.poll(PARTIAL * 1000):
                self._write(pending)  # nothing more for a while: a prompt, a progress line
                pending = b""
                continue
            chunk = os.read(read, 65536)
            if not chunk:
                break
            pending = self._lines(pending + chunk)
        if pending:
            self._write(pending)

    def _lines(self, data: bytes) -> bytes:
        """Write the whole lines of ``data`` (and everything before a sync marker); the rest
        is returned to wait for its line's end."""
        marker = self._marker
        while (at := data.find(marker)) >= 0:
            self._write(data[:at])
            data = data[at + len(marker) :]
            self._answer(1)
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1  # a progress line ends at \r
        if end:
            self._write(data[:end])
            data = data[end:]
        if len(data) > LONGEST:  # a line without end (a blob): out, but for its tail
            self._write(data[:-KEEP])
            data = data[-KEEP:]
        return data

    def _answer(self, syncs: int) -> None:
        if syncs:
            with self._synced:
                self._answered += syncs
                self._synced.notify_all()

    def _write(self, data: bytes) -> None:
        if not data or self._broken:
            return
        try:
            data = masked_bytes(data, self._masks() if self._fixed is None else self._fixed)
        except Exception as exc:  # never the bytes unmasked, and never a reader that stops
            why = type(exc).__name__
            data = f"[runbook: {len(data)} bytes not shown: masking failed ({why})]\n".encode()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.saved, view) :]
        except OSError:  # the terminal went away (a closed pipe): keep reading, drop it
            self._broken = True


class Pumps:
    """Descriptors 1 and 2, redirected while any run with secrets is active.

    ``depth`` is how many runs were active when this process started them (None: not
    started here), so the run that started them, in this process, is the one that stops them."""

    def __init__(self) -> None:
        self.active: dict[int, Pump] = {}
        self.depth: int | None = None

    def start(self, masks: Callable[[], Sequence[Mask]], depth: int) -> None:
        self.depth = depth
        if os.name != "posix":  # poll on a pipe is POSIX only
            return
        for fd in (1, 2):
            pump = Pump(fd, masks)
            with contextlib.suppress(OSError):
                if pump.start():
                    self.active[fd] = pump

    def stop(self) -> None:
        pumps, self.active, self.depth = self.active, {}, None
        for pump in pumps.values():
            pump.stop()

    def forked(self) -> None:
        """In a forked child: the readers stayed in the parent. The descriptors still go into
        the parent's pipes (masked there with the parent's masks), but nothing here waits for
        those readers, and a run of the child's own starts pumps of its own over them (its
        secrets are not the parent's)."""
        for pump in self.active.values():
            pump.forget()
        self.active, self.depth = {}, None

    def sync(self) -> None:
        for pump in self.active.values():
            pump.sync()

    def isatty(self, fd: int) -> bool | None:
        """Whether ``fd`` was a terminal before it was redirected; None if it is not."""
        pump = self.active.get(fd)
        return None if pump is None else pump.isatty()

    def terminal_size(self, fd: int) -> os.terminal_size | None:
        pump = self.active.get(fd)
        if pump is None:
            return None
        try:
            return pump.terminal_size()
        except OSError:
            return None
