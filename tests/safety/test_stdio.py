"""What a step prints is masked like everything runbook writes itself."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from runbook import stdio
from runbook.redact import Redactor

from .printing import exec_runbook, printing_runbook


def test_a_step_printing_a_secret_shows_it_masked_on_stdout_and_stderr(tmp_path: Path) -> None:
    rb = printing_runbook(
        tmp_path,
        """
        @step
        def sync_step(params):
            print("token is", params.token)
            sys.stderr.write("on stderr " + params.token[:9])
            sys.stderr.write(params.token[9:] + "\\n")  # split across two writes
            sys.stdout.buffer.write(b"bytes " + params.token.encode() + b"\\n")
            sys.stderr.buffer.write(params.token.encode() + b" on stderr bytes\\n")

        @step
        async def async_step(params, sync_step):
            print(f"async {params.token}", flush=True)
        """,
    )
    done = exec_runbook(rb)
    assert "token is ***" in done.stdout and "async ***" in done.stdout
    assert "on stderr ***" in done.stderr
    assert "bytes ***" in done.stdout and "*** on stderr bytes" in done.stderr


def test_masking_ends_with_the_last_run_and_keeps_what_was_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = sys.stdout
    with stdio.masked(Redactor(["first-secret"]).text):
        with stdio.masked(Redactor(["second-secret"]).text):
            print("a first-secret b second-secret")
            print("held", end="")
        assert isinstance(sys.stdout, stdio.MaskingStream)  # the first run is still on
        print(" first-secret")
    assert sys.stdout is original
    assert capsys.readouterr().out == "a *** b ***\nheld ***\n"


def test_a_flush_sends_a_partial_line_so_prompts_show() -> None:
    class Inner:
        def __init__(self) -> None:
            self.written: list[str] = []

        def write(self, text: str) -> int:
            self.written.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    inner = Inner()
    stream = stdio.MaskingStream(inner)  # type: ignore[arg-type]
    with stdio.masked(Redactor(["the-secret"]).text):
        stream.write("Approve? the-secret ")
        assert inner.written == []
        stream.flush()
    assert inner.written == ["Approve? *** "]


def test_a_run_without_secrets_leaves_the_streams_alone() -> None:
    before = sys.stdout
    with stdio.masked(None):
        assert sys.stdout is before


def test_a_stream_replaced_during_the_run_is_not_put_back_over(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    captured, replacement = sys.stdout, io.StringIO()
    try:
        with stdio.masked(Redactor(["the-secret"]).text):
            sys.stdout = replacement
        assert sys.stdout is replacement
    finally:
        sys.stdout = captured


def _text_stream() -> tuple[io.TextIOWrapper, io.BytesIO]:
    raw = io.BytesIO()
    return io.TextIOWrapper(raw, encoding="utf-8", write_through=False), raw


def test_bytes_written_under_the_text_layer_are_masked_by_line() -> None:
    text, raw = _text_stream()
    stream = stdio.MaskingStream(text)
    with stdio.masked(Redactor(["the-secret"]).text):
        stream.write("printed first\n")
        stream.buffer.write(b"\xff\xfe binary the-")  # not UTF-8, and the secret split in two
        assert b"the-" not in raw.getvalue()  # held until its line ends
        stream.buffer.write(bytearray(b"secret end\n"))
        stream.buffer.raw.write(memoryview(b"raw the-secret\n"))
        stream.buffer.write(b"prompt the-secret ")
        stream.buffer.flush()
    assert raw.getvalue() == b"printed first\n\xff\xfe binary *** end\nraw ***\nprompt *** "


def test_bytes_without_a_secret_pass_unchanged_and_a_stream_without_buffer_has_none() -> None:
    text, raw = _text_stream()
    blob = bytes(range(256)) + b"\n"
    with stdio.masked(Redactor(["the-secret"]).text):
        stdio.MaskingStream(text).buffer.write(blob)
        with pytest.raises(AttributeError):
            stdio.MaskingStream(io.StringIO()).buffer  # noqa: B018
    assert raw.getvalue() == blob


def test_a_held_partial_line_of_bytes_goes_out_masked_when_the_run_ends() -> None:
    text, raw = _text_stream()
    saved = sys.stdout
    sys.stdout = text
    try:
        with stdio.masked(Redactor(["the-secret"]).text):
            sys.stdout.buffer.write(b"no newline the-secret")
        assert sys.stdout is text
    finally:
        sys.stdout = saved
    assert raw.getvalue() == b"no newline ***"
