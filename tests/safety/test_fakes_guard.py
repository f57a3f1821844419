"""The fakes refuse what the real resources refuse: a command a test accepts offline is a command
production accepts. Before the fakes shared ``runbook.guard`` with ``shell`` and ``ssh``, an
f-string trap passed every offline test and failed only in production."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from unittest import mock

import pytest

from runbook.errors import CommandError
from runbook.scope import bound_to_run
from runbook.testing import FakeShell
from runbook.testing.ssh import FakeSSH

HOSTILE = "1.0; touch /tmp/pwned"


def _runbook(tmp_path: Path, body: str) -> Path:
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / f"rb_{uuid.uuid4().hex[:6]}.py"
    path.write_text(textwrap.dedent(body))
    return path


FSTRING_SHELL = """
    from runbook import param, step
    version = param("version")

    @step
    def install(shell, params):
        shell(f"deployctl install web {params.version}")
    """


def test_fake_shell_refuses_the_fstring_trap_like_shell(runbook_runner, tmp_path: Path) -> None:
    result = runbook_runner.run(_runbook(tmp_path, FSTRING_SHELL), version=HOSTILE)
    assert result.status == "failed"
    error = result.steps["install"].error
    assert error.startswith("UnsafeCommand: ") and "param 'version'" in error
    assert 'shell("deployctl install web {version}", version=...)' in error
    assert runbook_runner.shell.calls == []  # refused before the fake "ran" it


def test_fake_shell_accepts_the_safe_forms(runbook_runner, tmp_path: Path) -> None:
    path = _runbook(
        tmp_path,
        """
        from runbook import param, step
        version = param("version")

        @step
        def install(shell, params):
            shell(["deployctl", "install", "web", params.version])
            shell("deployctl install web {v} | tee log", v=params.version)
        """,
    )
    result = runbook_runner.run(path, version=HOSTILE)
    assert result.status == "succeeded", result.error
    assert runbook_runner.shell.calls == [
        "deployctl install web '1.0; touch /tmp/pwned'",
        "deployctl install web '1.0; touch /tmp/pwned' | tee log",
    ]


def test_fake_shell_unsafe_is_recorded_in_the_audit(runbook_runner, tmp_path: Path) -> None:
    path = _runbook(
        tmp_path,
        """
        from runbook import step

        @step
        def a(shell):
            shell.unsafe("echo one && echo two")
        """,
    )
    result = runbook_runner.run(path)
    assert result.status == "succeeded"
    [event] = [e for e in result.audit if e.kind == "unsafe_command"]
    assert event.data == {"command": "echo one && echo two", "via": "shell.unsafe"}
    assert runbook_runner.shell.unsafe_calls == ["echo one && echo two"]


def test_fake_ssh_refuses_the_fstring_trap_like_ssh(runbook_runner, tmp_path: Path) -> None:
    path = _runbook(
        tmp_path,
        """
        from runbook import param, step
        version = param("version")

        @step
        def install(ssh, params):
            ssh("web-1", f"deployctl install {params.version}")
        """,
    )
    result = runbook_runner.run(path, version=HOSTILE)
    assert result.status == "failed"
    error = result.steps["install"].error
    assert error.startswith("UnsafeCommand: ")
    assert 'ssh(host, "deployctl install {version}", version=...)' in error
    assert runbook_runner.ssh.calls == []


def test_fake_ssh_unsafe_is_recorded_with_its_host(runbook_runner, tmp_path: Path) -> None:
    path = _runbook(
        tmp_path,
        """
        from runbook import step

        @step
        def a(ssh):
            ssh.unsafe("web-1", "echo one && echo two")
        """,
    )
    result = runbook_runner.run(path)
    assert result.status == "succeeded"
    [event] = [e for e in result.audit if e.kind == "unsafe_command"]
    assert event.data == {"command": "echo one && echo two", "via": "ssh.unsafe", "host": "web-1"}


def test_a_placeholder_named_like_an_option_is_refused_by_the_fakes() -> None:
    with pytest.raises(CommandError, match=r"placeholder \{timeout\} is also an option of shell"):
        FakeShell()("sleep {timeout}", timeout_=3)
    with pytest.raises(CommandError, match=r'ssh\(host, "... \{env_\}", env_=...\)'):
        FakeSSH()("web-1", "deploy {env}")


def test_outside_a_run_the_fakes_have_nothing_to_check() -> None:
    shell = FakeShell()
    assert shell("echo " + HOSTILE).returncode == 0  # no run values: nothing is tainted
    assert shell.calls == ["echo " + HOSTILE]


def test_a_bound_view_shares_script_and_records() -> None:
    shell = FakeShell().on("deploy *", stdout="ok")
    view = bound_to_run(shell, ctx=None)
    assert view is not shell
    assert view("deploy web").stdout == "ok"
    assert shell.calls == ["deploy web"]


def test_objects_without_runbook_bind_are_given_as_they_are() -> None:
    double = mock.MagicMock()
    assert bound_to_run(double, ctx=object()) is double  # looked up on the type, not the mock
    assert bound_to_run("db-conn", ctx=object()) == "db-conn"


@pytest.mark.parametrize(
    ("call", "where"),
    [
        ("shell(\"echo '{v}'\", v=params.version)", "single"),
        ("ssh('web-1', 'grep \"{v}\" /etc/release', v=params.version)", "double"),
    ],
)
def test_the_fakes_refuse_a_quoted_placeholder_like_shell_and_ssh(
    runbook_runner, tmp_path: Path, call: str, where: str
) -> None:
    path = _runbook(
        tmp_path,
        f"""
        from runbook import param, step
        version = param("version")

        @step
        def a(shell, ssh, params):
            {call}
        """,
    )
    result = runbook_runner.run(path, version="1.0'; touch /tmp/pwned; '")
    assert result.status == "failed"
    error = result.steps["a"].error
    assert error.startswith("UnsafeCommand: ") and f"{{v}} is inside {where} quotes" in error
    assert runbook_runner.shell.calls == [] and runbook_runner.ssh.calls == []
