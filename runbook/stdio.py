"""What a step prints passes through the run's redactor before it reaches the terminal.

A step's ``print(params.token)`` (or a library it calls writing to ``sys.stderr``) would
otherwise put a secret on the operator's screen and into the CI log, the one output runbook does
not write itself. While any run is active, ``sys.stdout`` and ``sys.stderr`` are wrapped: text is
held until its line ends (or is flushed: a prompt), then masked by every active run's redactor
(a secret printed in two writes is masked whole). Runs in one process share the wrappers; they
are put back when the last run ends, unless something else replaced them meanwhile.

Bytes written under the text layer (``sys.stdout.buffer.write``, its ``raw``) are masked the same
way: decoded as the stream encodes, line by line, with undecodable bytes kept as they are.

What this cannot see: bytes written to the file descriptors directly (``os.write(1, ...)``, a
child process inheriting them). ``shell`` captures its commands' output, so those are masked
where runbook shows them.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

Mask = Callable[[str], str]

_LOCK = threading.RLock()
_MASKS: list[Mask] = []
_SAVED: dict[str, IO[str]] = {}


class MaskingStream:
    """A text stream that writes whole lines, masked, to the stream it wraps."""

    def __init__(self, inner: IO[str]) -> None:
        self.inner = inner
        self._pending = ""

    def write(self, text: str) -> int:
        with _LOCK:
            self._pending += text
            done, newline, rest = self._pending.rpartition("\n")
            if newline:
                self._pending = rest
                self.inner.write(_masked(done + newline))
        return len(text)

    def flush(self) -> None:
        """A flush is asked for (a prompt, a progress line, ``print(..., flush=True)``): the
        partial line goes out masked. ``print`` without it leaves a partial line held."""
        with _LOCK:
            if self._pending:
                self.inner.write(_masked(self._pending))
                self._pending = ""
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

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, ...
        return getattr(self.inner, name)


class MaskingBuffer:
    """A binary stream that writes whole lines, masked, to the binary stream it wraps.

    Lines are decoded with the text stream's encoding and ``surrogateescape``, so bytes that
    are not text (a binary blob, another encoding) come out unchanged where nothing is masked.
    """

    def __init__(self, inner: Any, encoding: str, text: IO[str]) -> None:
        self.inner = inner
        self.encoding = encoding
        self._text = text  # flushed first, so what was printed before comes out before
        self._pending = b""

    def write(self, data: Any) -> int:
        chunk = bytes(data)  # bytes, bytearray, memoryview
        with _LOCK:
            self._pending += chunk
            done, newline, rest = self._pending.rpartition(b"\n")
            if newline:
                self._pending = rest
                self._send(done + newline)
        return len(chunk)

    def flush(self) -> None:
        with _LOCK:
            if self._pending:
                self._send(self._pending)
                self._pending = b""
            self.inner.flush()

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    @property
    def raw(self) -> MaskingBuffer:
        """Under the buffer there is no further way around the mask."""
        return self

    def _send(self, data: bytes) -> None:
        text = data.decode(self.encoding, "surrogateescape")
        masked = _masked(text)
        self._text.flush()
        if masked != text:
            data = masked.encode(self.encoding, "surrogateescape")
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, mode, ...
        return getattr(self.inner, name)


def _masked(text: str) -> str:
    for mask in _MASKS:
        text = mask(text)
    return text


@contextlib.contextmanager
def masked(mask: Mask | None) -> Iterator[None]:
    """Mask ``sys.stdout``/``sys.stderr`` with ``mask`` for as long as the block runs.

    ``None`` (a run without secrets) changes nothing."""
    if mask is None:
        yield
        return
    with _LOCK:
        if not _MASKS:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if stream is not None:
                    _SAVED[name] = stream
                    setattr(sys, name, MaskingStream(stream))
        _MASKS.append(mask)
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
            _MASKS.remove(mask)
            if not _MASKS:
                for name, stream in _SAVED.items():
                    current = getattr(sys, name)
                    if isinstance(current, MaskingStream) and current.inner is stream:
                        setattr(sys, name, stream)
                _SAVED.clear()
