"""What a step prints passes through the run's redactor before it reaches the terminal.

A step's ``print(params.token)`` (or a library it calls writing to ``sys.stderr``) would
otherwise put a secret on the operator's screen and into the CI log, the one output runbook does
not write itself. While any run is active, ``sys.stdout`` and ``sys.stderr`` are wrapped: text is
held until its line ends (or is flushed: a prompt), then masked by every active run's redactor
(a secret printed in two writes is masked whole). Runs in one process share the wrappers; they
are put back when the last run ends, unless something else replaced them meanwhile.

Bytes written under the text layer (``sys.stdout.buffer.write``, its ``raw``) are masked the same
way: decoded as the stream encodes, line by line, with undecodable bytes kept as they are.

Under both, descriptors 1 and 2 themselves are masked (runbook/fdmask.py): bytes written to
them directly (``os.write(1, ...)``, a child process started without ``shell``) go through a
pipe that masks whole lines too. What this cannot see: a secret transformed in a way the
redactor does not know (reversed, sliced), or written in pieces further apart in time than a
partial line waits (``fdmask.PARTIAL``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, AnyStr, Generic

from runbook.fdmask import Pumps, masked_bytes, masked_text

Mask = Callable[[str], str]

_LOCK = threading.RLock()
_MASKS: list[Mask] = []
_SAVED: dict[str, IO[str]] = {}
# What the descriptors' readers mask with, read without ``_LOCK``: a writer holding it may be
# waiting for them to drain the pipe (replaced whole, under the lock, as ``_MASKS`` changes).
_ACTIVE: tuple[Mask, ...] = ()
_PUMPS = Pumps()


def _active() -> tuple[Mask, ...]:
    return _ACTIVE


class _Lines(Generic[AnyStr]):
    """What a stream holds until its line ends: a secret printed in two writes is masked whole."""

    def __init__(self, empty: AnyStr, newline: AnyStr) -> None:
        self.empty: AnyStr = empty
        self.newline: AnyStr = newline
        self.pending: AnyStr = empty

    def add(self, chunk: AnyStr) -> AnyStr:
        """The whole lines held with ``chunk`` (empty: none yet); the rest stays held."""
        done, newline, rest = (self.pending + chunk).rpartition(self.newline)
        self.pending = rest
        return done + newline

    def take(self) -> AnyStr:
        """Everything held (a flush: a prompt, the end of the run)."""
        held, self.pending = self.pending, self.empty
        return held


class MaskingStream:
    """A text stream that writes whole lines, masked, to the stream it wraps.

    Over a descriptor that goes through a masking pipe (runbook/fdmask.py) it passes the text
    on as it is: the pipe masks it, once, and holds a partial line as this would."""

    def __init__(self, inner: IO[str]) -> None:
        self.inner = inner
        self._held = _Lines("", "\n")
        self._fd = _fileno(inner)

    def write(self, text: str) -> int:
        if self._fd in _PUMPS.active:
            return self.inner.write(text)
        with _LOCK:
            if lines := self._held.add(text):
                self.inner.write(masked_text(lines, _ACTIVE))
        return len(text)

    def flush(self) -> None:
        """A flush is asked for (a prompt, a progress line, ``print(..., flush=True)``): the
        partial line goes out masked. ``print`` without it leaves a partial line held."""
        with _LOCK:
            if held := self._held.take():
                self.inner.write(masked_text(held, _ACTIVE))
            self.inner.flush()

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    @property
    def buffer(self) -> MaskingBuffer:
        """The binary layer, masked too: ``sys.stdout.buffer.write(token)`` is a common way to
        print bytes, and the wrapped stream's own buffer would pass them on as they are."""
        masking = self.__dict__.get("_buffer")
        if masking is None:
            inner: Any = getattr(self.inner, "buffer")  # noqa: B009 - a StringIO has none: raises
            encoding = getattr(self.inner, "encoding", None) or "utf-8"
            masking = self.__dict__["_buffer"] = MaskingBuffer(inner, encoding, self.inner)
        return masking

    def isatty(self) -> bool:
        """As the stream was before its descriptor went through the masking pipe: a prompt,
        colour and live progress still know they are on a terminal."""
        return _was_tty(self.inner)

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ...
        return getattr(self.inner, name)


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a StringIO, a capture)
        return None


def _was_tty(stream: Any) -> bool:
    fd = _fileno(stream)
    was = None if fd is None else _PUMPS.isatty(fd)
    return bool(stream.isatty()) if was is None else was


def terminal_columns() -> int:
    """The terminal's width, asked of standard output as it was before masking."""
    size = _PUMPS.terminal_size(1)
    if size is not None and size.columns > 0 and not os.environ.get("COLUMNS"):
        return size.columns
    return shutil.get_terminal_size().columns  # COLUMNS, else the terminal, else 80


class MaskingBuffer:
    """A binary stream that writes whole lines, masked, to the binary stream it wraps.

    Lines are decoded with the text stream's encoding and ``surrogateescape``, so bytes that
    are not text (a binary blob, another encoding) come out unchanged where nothing is masked.
    """

    def __init__(self, inner: Any, encoding: str, text: IO[str]) -> None:
        self.inner = inner
        self.encoding = encoding
        self._text = text  # flushed first, so what was printed before comes out before
        self._held = _Lines(b"", b"\n")
        self._fd = _fileno(inner)

    def write(self, data: Any) -> int:
        if self._fd in _PUMPS.active:  # the pipe masks it (see MaskingStream)
            return self.inner.write(data)
        chunk = bytes(data)  # bytes, bytearray, memoryview
        with _LOCK:
            if lines := self._held.add(chunk):
                self._send(lines)
        return len(chunk)

    def flush(self) -> None:
        with _LOCK:
            if held := self._held.take():
                self._send(held)
            self.inner.flush()

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    @property
    def raw(self) -> MaskingBuffer:
        """Under the buffer there is no further way around the mask."""
        return self

    def _send(self, data: bytes) -> None:
        data = masked_bytes(data, _ACTIVE, self.encoding)
        self._text.flush()
        self.inner.write(data)

    def isatty(self) -> bool:
        return _was_tty(self.inner)

    def __getattr__(self, name: str) -> Any:  # fileno, mode, ...
        return getattr(self.inner, name)


@contextlib.contextmanager
def masked(mask: Mask | None) -> Iterator[None]:
    """Mask ``sys.stdout``/``sys.stderr`` with ``mask`` for as long as the block runs.

    ``None`` (a run without secrets) changes nothing."""
    if mask is None:
        yield
        return
    global _ACTIVE
    with _LOCK:
        first = not _MASKS
        _MASKS.append(mask)
        _ACTIVE = tuple(_MASKS)
        if first:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if stream is not None:
                    _flush(stream)  # what was printed before goes out before the pipe
                    _SAVED[name] = stream
                    setattr(sys, name, MaskingStream(stream))
        if _PUMPS.depth is None:  # the first run here (or in a forked child: its first own)
            _PUMPS.start(_active, len(_MASKS))
    try:
        yield
    finally:
        with _LOCK:
            for name in ("stdout", "stderr"):
                current = getattr(sys, name)
                if isinstance(current, MaskingStream):
                    current.flush()  # masked by this run too: it may hold its secret
                    held = current.__dict__.get("_buffer")
                    if held is not None:
                        held.flush()
                elif current is not None:
                    _flush(current)
            last = len(_MASKS) == 1
            if _PUMPS.depth == len(_MASKS):  # out through the pipes, then the descriptors back
                _PUMPS.stop()
            else:  # what this run's steps wrote is out, masked by this run, before it ends
                _PUMPS.sync()
            _MASKS.remove(mask)
            _ACTIVE = tuple(_MASKS)
            if last:
                for name, stream in _SAVED.items():
                    current = getattr(sys, name)
                    if isinstance(current, MaskingStream) and current.inner is stream:
                        setattr(sys, name, stream)
                _SAVED.clear()


def _after_fork_in_child() -> None:
    _PUMPS.forked()
    _LOCK.release()


# A fork (multiprocessing's default on Linux) copies the state but not the readers' threads: the
# lock is held across it so the child's copy is consistent, and the child forgets the pumps.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_LOCK.acquire, after_in_parent=_LOCK.release, after_in_child=_after_fork_in_child
    )


def _flush(stream: Any) -> None:
    with contextlib.suppress(Exception):  # a closed or odd stream: nothing of ours to send
        stream.flush()
