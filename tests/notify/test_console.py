from __future__ import annotations

import asyncio
import io

import pytest

from runbook.errors import ConfigError
from runbook.notify.console import ConsoleNotifier, format_line
from runbook.notify.templates import build_message
from runbook.plugins import Plugins

from .conftest import RUN, event


def test_console_is_a_builtin_notifier_printing_one_line_to_stderr(capsys):
    notifier = Plugins(entry_points=False).open("notifier", "console://")
    message = build_message(
        event("step_failed", step="verify", error="AssertionError:\n  503 != 200"), RUN
    )
    asyncio.run(notifier.send(message))
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("[runbook] ERROR deploy: step verify failed in prod | run 01JRUN")
    assert "error: AssertionError: 503 != 200" in err
    assert "run: runbook show 01JRUN" in err


def test_console_stdout(capsys):
    notifier = ConsoleNotifier("console://stdout")
    asyncio.run(notifier.send(build_message(event("approval_requested", step="switch"), RUN)))
    out, err = capsys.readouterr()
    assert err == ""
    assert "run: runbook approve 01JRUN --step switch" in out


def test_console_explicit_stream():
    stream = io.StringIO()
    asyncio.run(
        ConsoleNotifier("console://", stream).send(
            build_message(event("run_finished", status="succeeded"), RUN)
        )
    )
    assert stream.getvalue() == "[runbook] INFO deploy succeeded in prod | run 01JRUN\n"


def test_console_unknown_stream_is_a_config_error():
    with pytest.raises(ConfigError, match="console://stdout"):
        ConsoleNotifier("console://printer")


def test_format_line_without_run_context():
    from runbook.notify.base import Message

    assert format_line(Message(title="hello  world")) == "[runbook] INFO hello world"
