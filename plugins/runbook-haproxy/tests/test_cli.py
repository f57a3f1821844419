"""``runbook router show|set`` against a real HAProxy, from the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from infra import HAProxy, split

from runbook.cli import cli
from runbook.plugins import Plugins

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path, haproxy: HAProxy, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "runbook.toml").write_text(
        f'router = "{haproxy.url}"\n'
        'audit = ["jsonl://.runbook/audit.jsonl"]\n'
        'lock = "file://.runbook/locks"\n'
    )
    monkeypatch.chdir(folder)
    monkeypatch.setenv("RUNBOOK_ACTOR", "alice")
    return folder


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def events(folder: Path) -> list[dict]:
    path = folder / ".runbook" / "audit.jsonl"
    if not path.exists():
        return []
    sink = Plugins().open("audit", f"jsonl://{path}")
    return [e.to_dict() for e in sink.events()]


def test_the_installed_cli_has_the_router_commands(project: Path) -> None:
    """The plugin's runbook_cli_commands hook is called by the real ``runbook`` program."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    out = subprocess.run(
        [sys.executable, "-m", "runbook", "router", "show", "web"],
        cwd=project, capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["stable  100  (active)", "canary    0"]


def test_set_is_locked_audited_and_read_back(project: Path, haproxy: HAProxy) -> None:
    code, out, err = invoke("router", "set", "web", "canary=20", "stable=80")
    assert code == 0, err
    assert out.startswith("web: stable=100 canary=0 -> stable=80 canary=20 (audit run router-")
    assert Plugins().open("router", haproxy.url).weights("web") == {"stable": 80, "canary": 20}
    counts = split(haproxy.port, 200)
    assert abs(counts["canary"] - 40) <= 20, counts

    trail = events(project)
    assert [e["kind"] for e in trail] == ["lock_acquired", "change_recorded", "lock_released"]
    change = trail[1]
    assert change["actor"] == "alice"
    assert change["data"] == {
        "target": "router:web",
        "before": {"stable": 100, "canary": 0},
        "after": {"stable": 80, "canary": 20},
    }
    assert trail[0]["data"]["lock"] == "router:web"
    assert len({e["run_id"] for e in trail}) == 1

    code, out, _ = invoke("router", "show", "web", "--json")
    assert code == 0
    assert json.loads(out) == {
        "service": "web",
        "router": haproxy.url,
        "weights": {"stable": 80, "canary": 20},
        "active": "stable",
    }


def test_set_waits_for_nobody_when_the_service_is_locked(project: Path) -> None:
    provider = Plugins().open("lock", f"file://{project}/.runbook/locks")
    lease = provider.acquire("router:web", "run-1", actor="bob", lease=60)
    assert lease is not None
    try:
        code, _, err = invoke("router", "set", "web", "canary=100", "stable=0")
    finally:
        provider.release(lease)
    assert code == 5
    assert "lock 'router:web' is held by run run-1 (bob)" in err
    assert events(project) == []
    code, out, _ = invoke("router", "show", "web")
    assert out.splitlines()[0] == "stable  100  (active)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["canary=20"], "must sum to 100"),
        (["canary=x", "stable=100"], "weight of canary must be an integer, got 'x'"),
        (["canary"], "expected TARGET=WEIGHT, got 'canary'"),
        (["green=100", "stable=0"], "has no server green"),
    ],
)
def test_bad_weights_are_usage_errors_that_change_nothing(
    project: Path, haproxy: HAProxy, args: list[str], message: str
) -> None:
    code, _, err = invoke("router", "set", "web", *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert Plugins().open("router", haproxy.url).weights("web") == {"stable": 100, "canary": 0}
    assert [e["kind"] for e in events(project)] in ([], ["lock_acquired", "lock_released"])


def test_unreachable_router_is_one_line(project: Path) -> None:
    from infra import free_port

    code, _, err = invoke("router", "show", "web", "--router", f"haproxy://127.0.0.1:{free_port()}")
    assert code == 1
    assert "unreachable" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["blue=50", "green=60"], "weights for 'web' must sum to 100, got 110"),
        (["blue=-5", "green=105"], "weight of web/blue must be an integer >= 0, got -5"),
    ],
)
def test_bad_weights_on_the_default_file_router_are_one_line_and_touch_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "runbook.toml").write_text('audit = ["jsonl://.runbook/audit.jsonl"]\n')
    monkeypatch.chdir(folder)
    monkeypatch.setenv("RUNBOOK_ACTOR", "alice")
    assert invoke("router", "set", "web", "blue=100")[0] == 0
    code, _, err = invoke("router", "set", "web", *args)
    assert code == 2, err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert invoke("router", "show", "web")[1].splitlines() == ["blue  100  (active)"]
    kinds = [e["kind"] for e in events(folder)]
    assert kinds == ["lock_acquired", "change_recorded", "lock_released"]  # the first set only
