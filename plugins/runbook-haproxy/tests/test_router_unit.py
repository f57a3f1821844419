"""HAProxyRouter's decisions without a server: URLs, names, command order, answer parsing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from runbook_haproxy.router import HAProxyRouter, ordered_commands, parse_servers_state
from runbook_haproxy.runtime import Address, HAProxyError, RuntimeAPI

from runbook.cli import cli
from runbook.errors import UsageError

RUNBOOKS = Path(__file__).resolve().parents[3] / "runbooks"

STATE = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight\n3 web 1 stable 127.0.0.1 2 0 80 100\n3 web 2 canary 127.0.0.1 2 0 20 0\n\n"
)


class Scripted:
    """A runtime API that answers from a script and records every request."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, ...]] = []

    def execute(self, *commands: str) -> str:
        self.requests.append(commands)
        return self.answers.pop(0)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("haproxy://127.0.0.1:9999", Address(host="127.0.0.1", port=9999)),
        ("haproxy://localhost:9999?timeout=2.5", Address(host="localhost", port=9999, timeout=2.5)),
        ("haproxy+unix:///run/haproxy/admin.sock", Address(path="/run/haproxy/admin.sock")),
    ],
)
def test_urls(url: str, expected: Address) -> None:
    assert Address.from_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("haproxy://127.0.0.1", "needs a host and a port"),
        ("haproxy://:9999", "needs a host and a port"),
        ("haproxy://127.0.0.1:99999", "router: haproxy://127.0.0.1:***: the port must be from 1"),
        ("haproxy://127.0.0.1:notaport", "router: haproxy://127.0.0.1:***: the port is not a n"),
        ("haproxy://[::1:9999", "router: haproxy://***: an IPv6 host needs both its brackets"),
        ("haproxy+unix://", "has no socket path"),
        ("haproxy://127.0.0.1:9999?timeout=0", "timeout must be > 0"),
        ("haproxy://127.0.0.1:9999?timeout=soon", "timeout must be seconds"),
        ("haproxy://127.0.0.1:9999?retries=3", "unknown option(s) retries"),
    ],
)
def test_bad_urls_are_usage_errors(url: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        Address.from_url(url)
    assert message in str(info.value)


def test_weights_going_up_are_set_first() -> None:
    """No 503 window: the backend's total weight never drops during a switch."""
    before = {"blue": 100, "green": 0, "red": 0}
    after = {"blue": 0, "green": 100, "red": 0}
    assert ordered_commands("web", before, after) == [
        "set server web/green weight 100",
        "set server web/blue weight 0",
    ]
    assert ordered_commands("web", after, after) == []


def test_parse_servers_state() -> None:
    assert parse_servers_state(STATE, "web") == {"stable": 80, "canary": 20}
    with pytest.raises(HAProxyError, match=r"backend 'api': Can't find backend\."):
        parse_servers_state("Can't find backend.\n\n", "api")
    with pytest.raises(HAProxyError, match="unexpected servers state header"):
        parse_servers_state("1\n# be_id be_name srv_id\n", "web")


def test_set_weights_sends_one_request_then_reads_back() -> None:
    api = Scripted(STATE.replace(" 80 100", " 100 100").replace(" 20 0\n", " 0 0\n"), "\n", STATE)
    router = HAProxyRouter("haproxy://127.0.0.1:1", api=api)
    router.set_weights("web", {"canary": 20, "stable": 80})
    assert api.requests == [
        ("show servers state web",),
        ("set server web/canary weight 20", "set server web/stable weight 80"),
        ("show servers state web",),
    ]


def test_a_refused_command_says_what_the_backend_looks_like_now() -> None:
    api = Scripted(STATE, "Absolute weight can only be between 0 and 256 inclusive.\n", STATE)
    router = HAProxyRouter("haproxy://127.0.0.1:1", api=api)
    with pytest.raises(HAProxyError) as info:
        router.set_weights("web", {"canary": 100, "stable": 0})
    assert "refused a weight change on web: Absolute weight" in str(info.value)
    assert "(weights now {'stable': 80, 'canary': 20})" in str(info.value)


@pytest.mark.parametrize("name", ["web;shutdown sessions", "web server", "web\nset", ""])
def test_names_cannot_smuggle_commands(name: str) -> None:
    api = Scripted()
    router = HAProxyRouter("haproxy://127.0.0.1:1", api=api)
    with pytest.raises(UsageError, match="must match"):
        router.weights(name)
    with pytest.raises(UsageError, match="must match"):
        router.set_weights("web", {name or "x y": 100})
    assert api.requests == []


def test_the_transport_refuses_a_second_command_in_one() -> None:
    with pytest.raises(UsageError, match="must be one command"):
        RuntimeAPI(Address(host="127.0.0.1", port=1)).execute("show info; shutdown frontend fe")


def test_exec_refuses_a_bad_haproxy_url_before_any_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router is opened when a step first asks for it: deploy_canary had run (and failed
    its rollback) before the bad port was found. Now the provider's check refuses it when the
    configuration is loaded into a Runner, exit 2, and no run starts."""
    (tmp_path / "runbook.toml").write_text(
        'router = "haproxy://127.0.0.1:notaport"\n'
        'store = "sqlite:///.runbook/runbook.db"\n'
        'audit = ["jsonl://.runbook/audit.jsonl"]\n'
        'lock = "file://.runbook/locks"\n'
    )
    shutil.copy(RUNBOOKS / "canary_haproxy.py", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNBOOK_ACTOR", "alice")
    result = CliRunner().invoke(cli, ["exec", "canary_haproxy.py", "--yes"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "runbook: error: router: haproxy://127.0.0.1:***: the port is not a number\n"
    )
    assert not (tmp_path / ".runbook" / "audit.jsonl").exists()
