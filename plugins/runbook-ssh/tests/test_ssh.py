"""The ssh resource against four real OpenSSH servers: commands, quoting, host keys, reachability.

Nothing about SSH is mocked: each test talks to sshd processes on 127.0.0.1 (see conftest.py).
"""

from __future__ import annotations

import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest

from runbook.errors import HostUnreachable

pytestmark = pytest.mark.slow


def runner_for(project: Path, **kwargs):
    from runbook.config import load_config
    from runbook.plugins import Plugins
    from runbook.runner import Runner

    keys = [k for ks in Plugins().hook.runbook_config_keys() for k in (ks or [])]
    config = load_config(project, extra_keys=keys)
    kwargs.setdefault("actor", "tester")
    return Runner.from_config(config, **kwargs)


def error_of(result, step: str) -> str:
    """The step's error message, which a failed step always has."""
    error = result.steps[step].error
    assert error is not None, f"step {step!r} has no error"
    return error


STEPS = """
from runbook import param, step

DEPLOYCTL = {deployctl!r}
version = param("version", default="2.0")
"""


def write(project: Path, fleet, body: str, name: str = "ops.py") -> Path:
    path = project / name
    path.write_text(STEPS.format(deployctl=str(fleet.deployctl)) + textwrap.dedent(body))
    return path


def run(project: Path, path: Path, **kwargs):
    params = kwargs.pop("params", {})
    with runner_for(project, **kwargs) as runner:
        return runner.run(path, params=params)


def test_commands_on_every_host_share_one_connection_each(project, fleet):
    path = write(
        project,
        fleet,
        """
        @step
        def each(ssh, hosts):
            out = {}
            for host in hosts.group("web"):
                first = ssh(host, ["sh", "-c", 'echo "$RB_HOST"'])
                again = ssh(host.name, "echo {word}", word="second")
                out[host.name] = [first.stdout.strip(), again.stdout.strip(), first.returncode]
            return {"out": out, "connects": ssh.pool.connects}
        """,
    )
    result = run(project, path)
    assert result.status == "succeeded", result.error
    output = result.steps["each"].output
    assert output["out"] == {f"web-{i}": [f"web-{i}", "second", 0] for i in range(1, 5)}
    assert output["connects"] == 4  # one pooled connection per host for the whole run


def test_result_and_failure_have_the_shape_of_shell(project, fleet):
    path = write(
        project,
        fleet,
        """
        @step
        def probe(ssh):
            res = ssh("web-1", ["sh", "-c", "echo out; echo err >&2; exit 4"], check=False)
            return [res.returncode, res.stdout, res.stderr, res.host, res.duration > 0, res.ok]

        @step
        def fail(probe, ssh):
            ssh("web-2", ["sh", "-c", "echo first >&2; echo 'disk full' >&2; exit 3"])
        """,
    )
    result = run(project, path)
    assert result.steps["probe"].output == [4, "out\n", "err\n", "web-1", True, False]
    error = error_of(result, "fail")
    assert error.startswith("CommandFailed: web-2: command exited 3: sh -c")
    assert error.endswith("first\ndisk full")


def test_output_that_is_not_utf8_is_escaped_as_shell_escapes_it(project, fleet):
    # It came back with U+FFFD in place of each byte: the byte was lost, unlike over shell.
    path = write(
        project,
        fleet,
        r"""
        @step
        def probe(ssh):
            res = ssh("web-1", ["sh", "-c", "printf 'caf\\351'; printf '\\377' >&2"])
            return [res.stdout, res.stderr]
        """,
    )
    result = run(project, path)
    assert result.steps["probe"].output == ["caf\\xe9", "\\xff"], result.steps["probe"].error


def test_a_metacharacter_param_over_ssh_does_not_execute(project, fleet, tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"2.0; touch {marker}"
    path = write(
        project,
        fleet,
        """
        @step
        def argv_form(ssh, params):
            ssh("web-1", [DEPLOYCTL, "install", params.version])

        @step
        def template_form(ssh, params):
            ssh("web-2", DEPLOYCTL + " install {v} && echo done", v=params.version)

        @step(after=[argv_form, template_form])
        def fstring_form(ssh, params):
            ssh("web-3", f"{DEPLOYCTL} install {params.version}")
        """,
    )
    result = run(project, path, params={"version": hostile})
    assert result.steps["argv_form"].status == "succeeded"
    assert result.steps["template_form"].status == "succeeded"
    assert fleet.by_name("web-1").version() == hostile  # one word, stored as given
    assert fleet.by_name("web-2").version() == hostile
    assert result.steps["fstring_form"].status == "failed"
    assert "UnsafeCommand" in error_of(result, "fstring_form")
    assert "param 'version'" in error_of(result, "fstring_form")
    assert fleet.by_name("web-3").version() is None
    assert not marker.exists()


def test_a_quoted_placeholder_over_ssh_is_refused_before_it_runs(project, fleet, tmp_path):
    marker = tmp_path / "pwned"
    path = write(
        project,
        fleet,
        """
        @step
        def quoted(ssh, params):
            ssh("web-1", DEPLOYCTL + " install '{v}'", v=params.version)
        """,
    )
    result = run(project, path, params={"version": f"2.0'; touch {marker}; '"})
    assert result.steps["quoted"].status == "failed"
    error = error_of(result, "quoted")
    assert error.startswith("UnsafeCommand: ") and "{v} is inside single quotes" in error
    assert "remove the quotes" in error
    assert fleet.by_name("web-1").version() is None
    assert not marker.exists()


def test_an_unknown_host_key_is_refused(project, fleet):
    lines = fleet.known_hosts.read_text().splitlines()
    fleet.known_hosts.write_text(
        "\n".join(line for line in lines if str(fleet.by_name("web-2").port) not in line) + "\n"
    )
    path = write(
        project,
        fleet,
        """
        @step
        def touch(ssh):
            ssh("web-2", ["true"])
        """,
    )
    result = run(project, path)
    assert result.status == "failed"
    error = error_of(result, "touch")
    assert error.startswith("UnknownHostKey: web-2: host key of 127.0.0.1:")
    assert "ssh_accept_new = true" in error
    assert str(fleet.by_name("web-2").port) not in fleet.known_hosts.read_text()


def test_accept_new_trusts_a_new_key_once_but_never_a_changed_one(project, fleet):
    import asyncssh

    web2 = fleet.by_name("web-2")
    kept = [
        line for line in fleet.known_hosts.read_text().splitlines() if str(web2.port) not in line
    ]
    fleet.known_hosts.write_text("\n".join(kept) + "\n")
    config = project / "runbook.toml"
    config.write_text(config.read_text() + "ssh_accept_new = true\n")
    path = write(
        project,
        fleet,
        """
        @step
        def touch(ssh):
            return ssh("web-2", ["true"]).returncode
        """,
    )
    assert run(project, path).status == "succeeded"
    assert web2.known_hosts_line() in fleet.known_hosts.read_text()  # remembered
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    fleet.known_hosts.write_text(
        "\n".join([*kept, f"[127.0.0.1]:{web2.port} {other.strip()}"]) + "\n"
    )
    result = run(project, path)
    assert result.status == "failed"
    assert "does not match" in error_of(result, "touch")


@pytest.fixture
def silent_port():
    """A TCP port that accepts connections and never says a word (a hung host)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    listener.close()


def test_an_unreachable_host_is_unreached_within_the_connect_timeout(project, fleet, silent_port):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    inventory = project / "hosts.ini"
    inventory.write_text(
        fleet.inventory.read_text()
        + f"hung ansible_host=127.0.0.1 ansible_port={silent_port}\n"
        + f"gone ansible_host=127.0.0.1 ansible_port={closed_port}\n"
    )
    config = project / "runbook.toml"
    text = config.read_text().replace(str(fleet.inventory), str(inventory))
    text = text.replace("ssh_connect_timeout = 3", "ssh_connect_timeout = 1")
    config.write_text(text + "ssh_accept_new = true\n")
    path = write(
        project,
        fleet,
        """
        from runbook.strategies import rolling

        def install(host, ssh, params):
            ssh(host, [DEPLOYCTL, "install", params.version])

        release = rolling("group:web", batch=6, max_failures=2, deploy=install)
        """,
    )
    began = time.monotonic()
    result = run(project, path)
    took = time.monotonic() - began
    assert result.status == "succeeded", result.error
    assert result.hosts["hung"] == "unreached" and result.hosts["gone"] == "unreached"
    assert "within 1s (ssh_connect_timeout)" in error_of(result, "release.deploy[hung]")
    assert "cannot connect" in error_of(result, "release.deploy[gone]")
    assert [fleet.by_name(f"web-{i}").version() for i in range(1, 5)] == ["2.0"] * 4
    assert took < 8, f"an unreachable host held the run for {took:.1f}s"
    events = [e.data for e in result.audit if e.kind == "host_failed"]
    assert sorted((e["host"], e["reason"]) for e in events) == [
        ("gone", "unreached"), ("hung", "unreached")
    ]  # fmt: skip


def test_every_command_has_a_timeout(project, fleet):
    path = write(
        project,
        fleet,
        """
        @step
        def slow(ssh):
            ssh("web-1", ["sleep", "30"], timeout=1)
        """,
    )
    began = time.monotonic()
    result = run(project, path)
    assert time.monotonic() - began < 10
    assert result.steps["slow"].error == "StepTimeout: web-1: command timed out after 1s: sleep 30"


def test_secrets_are_masked_in_errors_and_the_audit(project, fleet):
    path = write(
        project,
        fleet,
        """
        token = param("token", secret=True)

        @step
        def leak(ssh, params):
            ssh("web-1", ["sh", "-c", 'echo "token is $0" >&2; exit 1', params.token])
        """,
    )
    result = run(project, path, params={"token": "s3cr3t-t0ken-value"})
    assert "token is ***" in error_of(result, "leak")
    assert "s3cr3t-t0ken-value" not in error_of(result, "leak")
    trail = (project / ".runbook" / "audit.jsonl").read_text()
    assert "s3cr3t-t0ken-value" not in trail and "token is ***" in trail


def test_env_and_the_trace_context_reach_the_remote_command(project, fleet, monkeypatch):
    import runbook.tracing

    # The real span tree is test_ssh_tracing.py's; here, that whatever tracing hands a command
    # (TRACEPARENT and TRACESTATE) is exported beside env=, quoted.
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    carrier = {"TRACEPARENT": trace, "TRACESTATE": "k=v w"}
    monkeypatch.setattr(runbook.tracing, "command_env", lambda: carrier)
    path = write(
        project,
        fleet,
        """
        @step
        def show(ssh):
            argv = ["sh", "-c", 'echo "$TRACEPARENT|$TRACESTATE|$GREETING"']
            res = ssh("web-4", argv, env={"GREETING": "a b'c"})
            return [res.stdout.strip(), res.command]
        """,
    )
    result = run(project, path)
    assert result.steps["show"].output == [
        f"{trace}|k=v w|a b'c",
        """sh -c 'echo "$TRACEPARENT|$TRACESTATE|$GREETING"'""",
    ]


def test_async_steps_await_arun_and_sync_calls_there_are_refused(project, fleet):
    path = write(
        project,
        fleet,
        """
        import asyncio

        @step
        async def together(ssh):
            results = await asyncio.gather(
                *(ssh.arun(f"web-{i}", ["sh", "-c", 'echo "$RB_HOST"']) for i in range(1, 5))
            )
            return [r.stdout.strip() for r in results]

        @step
        async def blocking(together, ssh):
            ssh("web-1", ["true"])
        """,
    )
    result = run(project, path)
    assert result.steps["together"].output == [f"web-{i}" for i in range(1, 5)]
    assert "await ssh.arun(host, ...)" in error_of(result, "blocking")


def test_keys_from_the_agent_when_no_identity_file_is_set(project, fleet, tmp_path, monkeypatch):
    import subprocess

    config = project / "runbook.toml"
    config.write_text(
        "\n".join(x for x in config.read_text().splitlines() if "ssh_identity_file" not in x)
    )
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys to fall back on
    path = write(
        project,
        fleet,
        """
        @step
        def who(ssh):
            return ssh("web-1", ["sh", "-c", 'echo "$RB_HOST"']).stdout.strip()
        """,
    )
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    denied = run(project, path)
    assert error_of(denied, "who").startswith("HostUnreachable: web-1: authentication failed")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {"SSH_AUTH_SOCK": str(sock), "PATH": "/usr/bin:/bin"}
        subprocess.run(["ssh-add", "-q", str(fleet.client_key)], env=env, check=True, timeout=10)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        result = run(project, path)
        assert result.steps["who"].output == "web-1", result.error
    finally:
        agent.terminate()
        agent.wait(5)


def test_host_unreachable_is_the_core_error():
    from runbook_ssh.pool import UnknownHostKey

    assert issubclass(UnknownHostKey, HostUnreachable)


def test_asyncssh_never_logs_a_command_line(project, fleet):
    """asyncssh logs every command at INFO; a command may carry a secret, so unless someone set
    the asyncssh logger's level on purpose, the plugin keeps it at WARNING."""
    import logging

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        path = write(
            project,
            fleet,
            """
            token = param("token", secret=True)

            @step
            def use(ssh, params):
                ssh("web-1", ["true", params.token])
            """,
        )
        result = run(project, path, params={"token": "s3cr3t-in-argv"})
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert result.status == "succeeded", result.error
    assert not [r for r in records if "s3cr3t-in-argv" in r]
    assert logging.getLogger("asyncssh").getEffectiveLevel() == logging.WARNING
