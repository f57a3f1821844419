from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from runbook.cli import cli


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_notify_test_console():
    result = CliRunner().invoke(cli, ["notify", "test", "console://stdout"])
    assert result.exit_code == 0, result.output
    assert "[runbook] INFO runbook test notification" in result.output
    assert result.output.strip().endswith("sent to console://stdout")


def test_notify_test_failure_exits_1_without_the_token():
    pytest.importorskip("runbook_slack")
    url = f"slack://127.0.0.1:{_refused_port()}/services/T000/B000/SECRETTOKEN123"
    result = CliRunner().invoke(cli, ["notify", "test", url])
    assert result.exit_code == 1
    assert "could not send to slack://127.0.0.1:" in result.output
    assert "/***" in result.output
    assert "SECRETTOKEN123" not in result.output


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("slack://127.0.0.1:99999/services/T000/B000/SECRETTOKEN123", "the port must be from 1"),
        ("webhook+http://127.0.0.1:70000/x?secret=SECRETTOKEN123", "the port must be from 1"),
        ("teams://[::1/SECRETTOKEN123", "an IPv6 host needs both its brackets"),
    ],
)
def test_notify_test_a_malformed_url_is_one_line_and_exit_2(url: str, problem: str):
    """Was exit 1, "could not send to ...: unhandled errors in a TaskGroup (1 sub-exception)":
    httpx's ExceptionGroup for a port out of range, or urllib's "Invalid IPv6 URL"."""
    pytest.importorskip("runbook_slack")
    result = CliRunner().invoke(cli, ["notify", "test", url])
    assert result.exit_code == 2, result.output
    scheme = url.split("://", 1)[0]
    assert result.output.startswith(f"runbook: error: notify: {scheme}://***: {problem}")
    assert result.output.count("\n") == 1
    assert "TaskGroup" not in result.output and "SECRETTOKEN123" not in result.output


def test_notify_test_unknown_scheme_is_a_usage_error():
    result = CliRunner().invoke(cli, ["notify", "test", "pager://x/y"])
    assert result.exit_code == 2
    assert "no notifier plugin for pager://" in result.output


def test_notify_test_not_a_url():
    result = CliRunner().invoke(cli, ["notify", "test", "slack"])
    assert result.exit_code == 2
    assert "not a channel URL" in result.output


def test_notify_test_uses_the_rule_options_from_config(tmp_path, server, monkeypatch):
    pytest.importorskip("runbook_slack")
    from runbook_slack.webhook import verify_signature

    url = f"webhook+http://127.0.0.1:{server.server_address[1]}/rb"
    config = tmp_path / "runbook.toml"
    config.write_text(
        f'[tool.runbook]\nnotify = [{{ to = "{url}", options = '
        '{ secret_env = "RB_TEST_HOOK_SECRET" } }]\n'
    )
    monkeypatch.setenv("RB_TEST_HOOK_SECRET", "from-config-env")
    result = CliRunner().invoke(cli, ["notify", "test", url, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"sent to webhook+http://127.0.0.1:{server.server_address[1]}/***" in result.output
    ((path, headers, body, _),) = server.requests
    assert path == "/rb"
    assert verify_signature("from-config-env", body, headers["X-Runbook-Signature"])


def test_notify_test_reports_an_http_error(server):
    pytest.importorskip("runbook_slack")
    server.statuses[:] = [403]
    url = f"webhook+http://127.0.0.1:{server.server_address[1]}/rb/t0ken-t0ken-t0ken"
    result = CliRunner().invoke(cli, ["notify", "test", url])
    assert result.exit_code == 1
    assert "answered HTTP 403" in result.output
    assert "t0ken" not in result.output
    assert len(server.requests) == 1  # one attempt, no retries


def test_notify_test_says_the_error_inside_an_exception_group(monkeypatch):
    # A channel whose client raises from a task group said "unhandled errors in a TaskGroup".
    from runbook.cli import notify as notify_cli

    async def send(url, options, plugins):
        raise ExceptionGroup("unhandled errors in a TaskGroup", [ConnectionError("refused")])

    monkeypatch.setattr(notify_cli, "_send", send)
    result = CliRunner().invoke(cli, ["notify", "test", "console://stdout"])
    assert result.exit_code == 1
    assert result.output.strip() == "runbook: error: could not send to console://stdout: refused"
