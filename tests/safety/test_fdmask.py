"""Descriptors 1 and 2 are masked too: ``os.write``, child processes, C libraries.

The pump tests point a pipe's write end (standing in for a terminal) through a ``Pump`` and read
what comes out of the other end. They wait on the pipe (``select`` with a generous bound) for
output, never for time to pass.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook import stdio
from runbook.fdmask import Pump
from runbook.redact import Redactor

from .printing import SECRET, exec_command, exec_env, exec_runbook, printing_runbook

MASK = Redactor([SECRET]).text


class Terminal:
    """A pipe standing in for a terminal: ``fd`` is written to, ``read`` sees what arrives."""

    def __init__(self) -> None:
        self.out, self.fd = os.pipe()
        self.seen = b""

    def read(self, until: bytes, size: int = 0) -> bytes:
        """What arrived, once it ends with ``until`` and holds ``size`` bytes (the test fails
        after 10 s without them)."""
        while not self.seen.endswith(until) or len(self.seen) < size:
            ready, _, _ = select.select([self.out], [], [], 10)
            assert ready, f"no output ending {until!r}; so far {self.seen!r}"
            chunk = os.read(self.out, 65536)
            assert chunk, f"end of output before {until!r}; so far {self.seen!r}"
            self.seen += chunk
        return self.seen

    def close(self) -> None:
        for fd in (self.out, self.fd):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal()
    yield term
    term.close()


def pump_on(terminal: Terminal, masks: tuple = (MASK,)) -> Pump:
    pump = Pump(terminal.fd, lambda: masks)
    assert pump.start()
    return pump


def test_bytes_written_to_the_descriptor_come_out_masked_and_in_order(terminal: Terminal) -> None:
    pump = pump_on(terminal)
    os.write(terminal.fd, f"one {SECRET}\ntwo ".encode())
    os.write(terminal.fd, f"{SECRET[:5]}".encode())  # a line split across writes
    os.write(terminal.fd, f"{SECRET[5:]} end\n".encode())
    assert pump.sync()
    assert terminal.read(b"end\n") == b"one ***\ntwo *** end\n"
    pump.stop()
    os.write(terminal.fd, b"back to the terminal itself\n")
    assert terminal.read(b"itself\n").endswith(b"end\nback to the terminal itself\n")


def test_a_partial_line_goes_out_masked_when_nothing_follows(terminal: Terminal) -> None:
    pump = pump_on(terminal)
    os.write(terminal.fd, f"Approve {SECRET}? ".encode())
    assert terminal.read(b"? ") == b"Approve ***? "
    pump.stop()


def test_bytes_that_are_not_text_pass_unchanged(terminal: Terminal) -> None:
    pump = pump_on(terminal)
    blob = bytes(range(256)) + b"\n"
    os.write(terminal.fd, blob)
    pump.stop()
    assert terminal.read(b"\xff\n") == blob


def test_a_child_process_writing_to_the_descriptor_is_masked(terminal: Terminal) -> None:
    pump = pump_on(terminal)
    subprocess.run(
        ["sh", "-c", 'echo "child $TOKEN"'],
        stdout=terminal.fd,
        env=exec_env(),
        check=True,
    )
    pump.stop()
    assert terminal.read(b"\n") == b"child ***\n"


def test_a_child_left_holding_the_pipe_does_not_hold_up_the_end_and_stays_masked(
    terminal: Terminal,
) -> None:
    pump = pump_on(terminal)
    child = subprocess.Popen(
        ["sh", "-c", 'read go; echo "late $TOKEN"'],
        stdin=subprocess.PIPE,
        stdout=terminal.fd,
        env=exec_env(),
    )
    try:
        pump.stop()  # returns although the child still holds the pipe
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        assert terminal.read(b"\n") == b"late ***\n"  # masked with the masks it had
    finally:
        child.wait(10)


def test_a_mask_that_fails_hides_the_line_and_the_reader_goes_on(terminal: Terminal) -> None:
    def broken(text: str) -> str:
        if "boom" in text:
            raise RuntimeError(SECRET)
        return MASK(text)

    pump = pump_on(terminal, (broken,))
    os.write(terminal.fd, f"boom {SECRET}\n".encode())
    assert pump.sync()
    os.write(terminal.fd, f"after {SECRET}\n".encode())
    pump.stop()
    seen = terminal.read(b"after ***\n")
    assert SECRET.encode() not in seen
    assert seen.startswith(b"[runbook: ") and b"masking failed (RuntimeError)" in seen


def test_a_terminal_that_went_away_never_blocks_the_writers(terminal: Terminal) -> None:
    pump = pump_on(terminal)
    os.close(terminal.out)  # nobody reads the terminal any more
    writer = threading.Thread(target=os.write, args=(terminal.fd, b"x" * 1_000_000))
    writer.start()
    writer.join(10)
    assert not writer.is_alive(), "a write blocked: the reader stopped draining the pipe"
    pump.stop()


def test_a_descriptor_that_is_not_open_is_left_alone() -> None:
    read, write = os.pipe()
    os.close(read)
    os.close(write)
    assert Pump(write, lambda: (MASK,)).start() is False


def test_a_run_masks_descriptor_1_and_puts_it_back(capfd: pytest.CaptureFixture[str]) -> None:
    with stdio.masked(MASK):
        os.write(1, f"fd {SECRET}\n".encode())
        os.write(2, f"fd2 {SECRET}\n".encode())
        assert sys.stdout.isatty() is False  # as it was: pytest's capture file
    os.write(1, b"after\n")
    out, err = capfd.readouterr()
    assert (out, err) == ("fd ***\nafter\n", "fd2 ***\n")


def test_a_run_ending_while_another_goes_on_has_its_output_out_first(
    capfd: pytest.CaptureFixture[str],
) -> None:
    other = Redactor(["other-secret"]).text
    with stdio.masked(other):
        with stdio.masked(MASK):
            os.write(1, f"first {SECRET} other-secret\n".encode())
        os.write(1, b"second other-secret\n")
    assert capfd.readouterr().out == "first *** ***\nsecond ***\n"


def test_a_step_writing_to_the_descriptors_and_its_children_show_masked(tmp_path: Path) -> None:
    rb = printing_runbook(
        tmp_path,
        """
        @step
        def writes(params):
            print("printed first", flush=True)
            os.write(1, ("fd " + params.token + "\\n").encode())
            os.write(2, ("fd2 " + params.token + "\\n").encode())
            subprocess.run(["sh", "-c", 'echo "child $TOKEN"; echo "child2 $TOKEN" >&2'])
            print("printed last", flush=True)
        """,
    )
    done = exec_runbook(rb)
    lines = [line.strip() for line in done.stdout.splitlines()]
    mine = [line for line in lines if line.startswith(("printed", "fd ", "child "))]
    assert mine == ["printed first", "fd ***", "child ***", "printed last"]
    assert "fd2 ***" in done.stderr and "child2 ***" in done.stderr


def test_a_step_on_a_terminal_still_sees_a_terminal(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    rb = printing_runbook(
        tmp_path,
        """
        @step
        def where(params):
            print("tty", sys.stdout.isatty(), params.token, flush=True)
        """,
    )
    main, side = pty.openpty()
    child = subprocess.Popen(
        exec_command(rb),
        cwd=tmp_path,
        env=exec_env(),
        stdin=subprocess.DEVNULL,
        stdout=side,
        stderr=side,
    )
    os.close(side)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 60)
            assert ready, f"no output; so far {seen!r}"
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal's other side closed: the run ended
                break
            if not chunk:
                break
            seen += chunk
    finally:
        assert child.wait(60) == 0, seen
        os.close(main)
    assert SECRET.encode() not in seen
    assert b"tty True ***" in seen


def test_a_progress_line_goes_out_at_its_carriage_return(terminal: Terminal) -> None:
    pump = pump_on(terminal)
    os.write(terminal.fd, f"\r10% {SECRET}\r20%".encode())
    assert terminal.read(b"\r") == b"\r10% ***\r"  # at once, not after a pause
    pump.stop()
    assert terminal.read(b"20%") == b"\r10% ***\r20%"


def test_a_line_without_end_is_not_held_whole(terminal: Terminal) -> None:
    from runbook.fdmask import KEEP, LONGEST

    pump = pump_on(terminal)
    blob = b"x" * (LONGEST + KEEP)
    os.write(terminal.fd, blob)  # more than a pipe holds: the reader must pass some on
    assert len(terminal.read(b"x", LONGEST)) < len(blob)  # before the end, some came out
    pump.stop()
    assert terminal.read(b"x", len(blob)) == blob


@pytest.mark.parametrize(
    ("size", "columns_env", "expected"),
    [((132, 40), None, 132), ((0, 0), None, 80), ((132, 40), "100", 100), (None, "90", 90)],
)
def test_the_progress_line_width_is_the_terminal_s_as_it_was(
    monkeypatch: pytest.MonkeyPatch, size: tuple | None, columns_env: str | None, expected: int
) -> None:
    """A pty without a size reports 0 columns: the width falls back as shutil's does (80)."""
    shown = None if size is None else os.terminal_size(size)
    monkeypatch.setattr(stdio._PUMPS, "terminal_size", lambda fd: shown)
    if columns_env is None:
        monkeypatch.delenv("COLUMNS", raising=False)
        monkeypatch.setattr("shutil.get_terminal_size", lambda: os.terminal_size((80, 24)))
    else:
        monkeypatch.setenv("COLUMNS", columns_env)
    assert stdio.terminal_columns() == expected


def test_text_over_a_masked_descriptor_is_passed_on_for_the_pipe_to_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Masked once, in the pipe: the text layer neither holds a partial line nor masks it."""

    class Inner:
        def __init__(self) -> None:
            self.written: list[str] = []

        def fileno(self) -> int:
            return 1

        def write(self, text: str) -> int:
            self.written.append(text)
            return len(text)

    piped, other = Inner(), Inner()
    other.fileno = lambda: 7  # type: ignore[method-assign]
    monkeypatch.setattr(stdio._PUMPS, "active", {1: object()})
    with stdio.masked(MASK):
        stdio.MaskingStream(piped).write(f"partial {SECRET}")  # type: ignore[arg-type]
        stdio.MaskingStream(other).write(f"partial {SECRET}\n")  # type: ignore[arg-type]
    assert piped.written == [f"partial {SECRET}"]
    assert other.written == ["partial ***\n"]


def test_a_reader_that_fails_hides_the_rest_and_never_blocks_the_writers(
    terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Pump, data: bytes) -> bytes:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(Pump, "_lines", broken)
    pump = pump_on(terminal)
    writer = threading.Thread(target=os.write, args=(terminal.fd, SECRET.encode() * 100_000))
    writer.start()
    writer.join(10)
    assert not writer.is_alive(), "a write blocked: the failed reader stopped draining"
    assert pump.sync()  # answered, not waited out
    pump.stop()
    seen = terminal.read(b"]\n")
    assert seen == b"[runbook: output not shown from here: RuntimeError]\n"


def test_a_pipe_numbered_past_fd_setsize_is_read_too(terminal: Terminal) -> None:
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit on open files is {hard}: no descriptor past 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = []
    try:
        while not filler or filler[-1] < 1030:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        pump = pump_on(terminal)  # its pipe is numbered past 1024
        os.write(terminal.fd, f"prompt {SECRET} ".encode())  # a partial line: waited on
        assert terminal.read(b"*** ") == b"prompt *** "
        pump.stop()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


FORKED = """
import os, sys, time
from runbook import fdmask, stdio
from runbook.redact import Redactor

fdmask.SYNC_TIMEOUT = 30.0  # a sync nobody answers would hold the child's end this long
with stdio.masked(Redactor(["parent-secret"]).text):
    os.write(1, b"parent parent-secret\\n")
    pid = os.fork()
    if pid == 0:  # a step's forked child (multiprocessing's default on Linux) runs a run of its own
        with stdio.masked(Redactor(["child-secret"]).text):
            os.write(1, b"child fd child-secret parent-secret\\n")
            print("child print child-secret parent-secret", flush=True)
            began = time.monotonic()
        took = time.monotonic() - began
        os.write(1, b"child after parent-secret\\n")
        os.write(1, f"child end took {took:.1f}\\n".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.write(1, b"parent after child parent-secret\\n")
"""


def test_a_forked_child_s_own_run_masks_its_secrets_and_ends_at_once() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "child-secret" not in done.stdout and "parent-secret" not in done.stdout
    assert lines[:4] == [
        "parent ***",
        "child fd *** ***",
        "child print *** ***",
        "child after ***",
    ]
    took = float(lines[4].removeprefix("child end took "))
    assert took < 10  # its own reader answered; nobody's was waited for until SYNC_TIMEOUT
    assert lines[5:] == ["parent after child ***"]
