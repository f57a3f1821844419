"""The ``shell`` resource for real: no shell for argv, quoted templates, the f-string trap refused,
``shell.unsafe`` audited, timeouts, environment, and failures that say why."""

from __future__ import annotations

import os
import re
import textwrap
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from runbook import Runner
from runbook.clock import SystemClock
from runbook.commands import url
from runbook.errors import CommandError, CommandFailed, StepTimeout
from runbook.resources import Shell

PAYLOADS = [
    "; touch {x}",
    "$(touch {x})",
    "`touch {x}`",
    "| touch {x}",
    "&& touch {x}",
    "\ntouch {x}",
]


def _runbook(tmp_path: Path, body: str, name: str = "rb") -> Path:
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / f"{name}_{uuid.uuid4().hex[:6]}.py"
    path.write_text(textwrap.dedent(body))
    return path


def _run(path: Path, **kw):
    kw.setdefault("store", f"memory://{uuid.uuid4().hex}")
    kw.setdefault("locks", f"memory://{uuid.uuid4().hex}")
    kw.setdefault("actor", "alice")
    return Runner(**kw).run(path)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


# -- the injection payloads --------------------------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS)
def test_argv_and_template_forms_never_run_a_payload(
    tmp_path: Path, marker: Path, payload: str
) -> None:
    value = "1.0" + payload.format(x=marker)
    path = _runbook(
        tmp_path,
        """
        from runbook import param, step
        version = param("version")

        @step
        def argv(shell, params):
            return shell(["printf", "%s", params.version]).stdout

        @step
        def template(shell, params):
            return shell("printf %s {version} | cat", version=params.version).stdout
        """,
    )
    result = _run(path, params={"version": value})
    assert result.status == "succeeded", result.error
    assert result.steps["argv"].output == value
    assert result.steps["template"].output == value
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_fstring_trap_is_refused(tmp_path: Path, marker: Path, payload: str) -> None:
    value = "1.0" + payload.format(x=marker)
    path = _runbook(
        tmp_path,
        """
        from runbook import param, step
        version = param("version")

        @step
        def install(shell, params):
            shell(f"echo deployctl install web {params.version}")
        """,
    )
    result = _run(path, params={"version": value})
    assert result.status == "failed"
    error = result.steps["install"].error
    assert error.startswith("UnsafeCommand: ")
    assert "param 'version'" in error
    assert 'shell("echo deployctl install web {version}", version=...)' in error
    assert not marker.exists()


def test_trap_covers_step_outputs(tmp_path: Path, marker: Path) -> None:
    path = _runbook(
        tmp_path,
        f"""
        from runbook import step

        @step
        def plan():
            return {{"target": "green; touch {marker}"}}

        @step
        def stage(plan, shell):
            shell("echo " + plan["target"])
        """,
    )
    result = _run(path)
    assert result.status == "failed"
    assert "output of step 'plan'['target']" in result.steps["stage"].error
    assert not marker.exists()


@pytest.mark.parametrize(
    ("output", "pick"),
    [
        # many values: the hostile one is the last of 5000 strings a shell would read as code
        ("[f'item {i}; x' for i in range(4999)] + [HOSTILE]", "plan[-1]"),
        # deep: twelve levels of nesting
        ("functools.reduce(lambda v, _: {'k': [v]}, range(12), HOSTILE)", "dig(plan)"),
        # a key, not a value
        ("{HOSTILE: 1}", "next(iter(plan))"),
    ],
    ids=["many", "deep", "key"],
)
def test_trap_covers_every_value_of_an_output(
    tmp_path: Path, marker: Path, output: str, pick: str
) -> None:
    path = _runbook(
        tmp_path,
        f"""
        import functools
        from runbook import step

        HOSTILE = "green; touch {marker}"

        def dig(v):
            while not isinstance(v, str):
                v = v["k"][0]
            return v

        @step
        def plan():
            return {output}

        @step
        def stage(plan, shell):
            shell("echo " + {pick})
        """,
    )
    result = _run(path)
    assert result.status == "failed"
    error = result.steps["stage"].error
    assert error.startswith("UnsafeCommand: ") and "output of step 'plan'" in error
    assert not marker.exists()


def test_trap_covers_many_params_and_a_path_param(tmp_path: Path, marker: Path) -> None:
    path = _runbook(
        tmp_path,
        """
        from pathlib import Path
        from runbook import param, step
        names = param("names", type=lambda raw: raw.split(","), default="a")
        folder = param("folder", type=Path, default="/tmp")

        @step
        def many(shell, params):
            shell("echo " + params.names[-1])

        @step(after=[many])
        def path(shell, params):
            shell(f"ls {params.folder}")
        """,
    )
    names = ",".join([f"n {i}" for i in range(3000)] + [f"x; touch {marker}"])
    error = _run(path, params={"names": names}).steps["many"].error
    assert error.startswith("UnsafeCommand: ") and "param 'names'[3000]" in error
    # a Path (any param type whose text an f-string writes) is checked as its text
    error = _run(path, params={"folder": f"/tmp/a; touch {marker}"}).steps["path"].error
    assert error is not None and error.startswith("UnsafeCommand: ")
    assert "param 'folder'" in error
    assert not marker.exists()


def test_trap_covers_sh_c_in_an_argv(tmp_path: Path, marker: Path) -> None:
    path = _runbook(
        tmp_path,
        """
        from runbook import param, step
        v = param("v")

        @step
        def a(shell, params):
            shell(["sh", "-c", f"echo {params.v}"])
        """,
    )
    result = _run(path, params={"v": f"$(touch {marker})"})
    assert result.status == "failed" and "UnsafeCommand" in result.steps["a"].error
    assert not marker.exists()


def test_safe_values_are_not_refused(tmp_path: Path) -> None:
    path = _runbook(
        tmp_path,
        """
        from runbook import param, step
        version = param("version")

        @step
        def a(shell, params):
            return shell(f"echo web-{params.version}").stdout.strip()
        """,
    )
    result = _run(path, params={"version": "1.2.3+build.7"})
    assert result.status == "succeeded"
    assert result.steps["a"].output == "web-1.2.3+build.7"


def test_none_env_only_warns_and_audits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _runbook(
        tmp_path,
        """
        from runbook import param, step
        v = param("v")

        @step
        def a(shell, params):
            return shell(f"echo {params.v}").stdout.strip()
        """,
    )
    result = _run(path, params={"v": "a b"}, protection="none")
    assert result.status == "succeeded"
    assert result.steps["a"].output == "a b"
    assert "protection none, running anyway" in caplog.text
    [event] = [e for e in result.audit if e.kind == "unsafe_command"]
    assert event.step == "a" and event.data["source"] == "param 'v'"


def test_unsafe_opt_out_runs_as_written_and_is_audited(tmp_path: Path, marker: Path) -> None:
    path = _runbook(
        tmp_path,
        f"""
        from runbook import step

        @step
        def a(shell):
            return shell.unsafe("echo one && touch {marker}").stdout.strip()
        """,
    )
    result = _run(path)
    assert result.status == "succeeded"
    assert marker.exists()
    [event] = [e for e in result.audit if e.kind == "unsafe_command"]
    assert event.data == {"command": f"echo one && touch {marker}", "via": "shell.unsafe"}


QUOTED = [
    ("single", "echo '{v}'", "'; touch {x}; '"),
    ("double", 'grep "{v}" /dev/null', '"; touch {x}; "'),
    ("comment", "true # {v}", "\ntouch {x}\n"),
    ("heredoc", "cat <<EOF\n{v}\nEOF", "$(touch {x})"),
]


@pytest.mark.parametrize(("name", "template", "payload"), QUOTED, ids=[q[0] for q in QUOTED])
def test_a_quoted_placeholder_is_refused_before_anything_runs(
    tmp_path: Path, marker: Path, name: str, template: str, payload: str
) -> None:
    path = _runbook(
        tmp_path,
        f"""
        from runbook import param, step
        v = param("v")

        @step
        def a(shell, params):
            shell("touch {marker}.ran")  # a command before: the step did run until the template
            shell({template!r}, v=params.v)
        """,
    )
    result = _run(path, params={"v": payload.format(x=marker)})
    assert result.status == "failed"
    error = result.steps["a"].error
    assert error.startswith("UnsafeCommand: ") and "placeholder {v} is" in error
    assert Path(f"{marker}.ran").exists()
    assert not marker.exists()


def test_placeholders_next_to_quotes_comments_and_heredocs_stay_one_word(
    tmp_path: Path, marker: Path
) -> None:
    path = _runbook(
        tmp_path,
        """
        from runbook import param, step
        v = param("v")

        @step
        def a(shell, params):
            script = "cat <<'EOF'\\nit's\\nEOF\\n# a comment\\nprintf '[%s]' \\"x\\"{v}'y' # {{v}}"
            return shell(script, v=params.v).stdout
        """,
    )
    value = f"'; touch {marker}; \"`$(touch {marker})`\ntouch {marker}\n"
    result = _run(path, params={"v": value})
    assert result.status == "succeeded", result.error
    assert result.steps["a"].output == f"it's\n[x{value}y]"
    assert not marker.exists()


# -- timeouts, environment, results, failures ---------------------------------------------------


def test_result_fields() -> None:
    result = Shell(SystemClock())(["sh", "-c", "echo out; echo err >&2; exit 0"])
    assert (result.stdout, result.stderr, result.returncode) == ("out\n", "err\n", 0)
    assert result.duration >= 0 and result.ok


def test_failure_carries_masked_command_code_and_stderr_tail(tmp_path: Path) -> None:
    path = _runbook(
        tmp_path,
        """
        from runbook import param, step
        token = param("token", secret=True)

        @step
        def a(shell, params):
            shell(
                "for i in $(seq 1 30); do echo line$i >&2; done; echo {t} >&2; exit 3",
                t=params.token,
            )
        """,
    )
    result = _run(path, params={"token": "tok-9f8e7d6c"})
    error = result.steps["a"].error
    assert error.startswith("CommandFailed: command exited 3: for i in")
    assert "tok-9f8e7d6c" not in error and "***" in error
    assert "line30" in error and "line10\n" not in error  # the last 20 lines only


def test_command_failed_attributes() -> None:
    with pytest.raises(CommandFailed) as info:
        Shell(SystemClock())(["sh", "-c", "echo a >&2; echo b >&2; exit 7"])
    assert info.value.returncode == 7
    assert info.value.stderr_tail == "a\nb"
    assert info.value.command == "sh -c 'echo a >&2; echo b >&2; exit 7'"


def test_check_false_returns_the_failure() -> None:
    assert Shell(SystemClock())(["false"], check=False).returncode == 1


def test_missing_program_is_one_clear_error() -> None:
    with pytest.raises(CommandError, match="cannot run no-such-prog-x: No such file"):
        Shell(SystemClock())(["no-such-prog-x"])


def test_default_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    child = tmp_path / "child-alive"
    shell = Shell(SystemClock(), default_timeout=0.3)
    with pytest.raises(StepTimeout, match=r"command timed out after 0\.3s"):
        shell.unsafe(f"(sleep 1.5; touch {child}) & sleep 5")
    threading.Event().wait(1.8)  # the background child would have written by now
    assert not child.exists()


def test_shell_timeout_from_config_and_step_timeout(tmp_path: Path) -> None:
    (tmp_path / "runbook.toml").write_text("shell_timeout = 0.2\n")
    path = _runbook(
        tmp_path,
        """
        from runbook import step

        @step(required=False)
        def a(shell):
            shell(["sleep", "3"])

        @step(timeout=0.3, required=False)
        def b(shell):
            shell(["sleep", "3"], timeout=100)
        """,
    )
    from runbook.config import load_config

    config = load_config(tmp_path, extra_keys=["shell_timeout"])
    result = Runner.from_config(config, actor="alice", store=f"memory://{uuid.uuid4().hex}").run(
        path
    )
    assert "command timed out after 0.2s" in result.steps["a"].error
    # The command gets what is left of the step's 0.3 s (a hair less once the step has begun),
    # so either it or the step's own timeout fires first: both say about 0.3 s, never 100 s.
    assert re.search(r"timed out after 0\.(29\d*|3)s", result.steps["b"].error)


def test_bad_shell_timeout_is_a_config_error(tmp_path: Path) -> None:
    from runbook.config import load_config
    from runbook.errors import ConfigError
    from runbook.resources import runbook_configure

    (tmp_path / "runbook.toml").write_text('shell_timeout = "soon"\n')
    with pytest.raises(ConfigError, match="shell_timeout must be a positive number"):
        runbook_configure(load_config(tmp_path, extra_keys=["shell_timeout"]))


def test_env_merges_and_env_clear_replaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_INHERITED", "yes")
    shell = Shell(SystemClock())
    merged = shell(["sh", "-c", 'echo "$RB_INHERITED $RB_ADDED"'], env={"RB_ADDED": "too"})
    assert merged.stdout == "yes too\n"
    cleared = shell(["/usr/bin/env"], env={"ONLY": "1"}, env_clear=True).stdout.splitlines()
    assert cleared == ["ONLY=1"]
    assert os.environ["RB_INHERITED"] == "yes"


def test_placeholder_named_like_an_option_is_refused() -> None:
    with pytest.raises(CommandError, match=r"placeholder \{env\} is also an option"):
        Shell(SystemClock())("deploy --env {env}", env={"A": "1"})


# -- http URL building -------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("payload", PAYLOADS)
def test_http_url_building_keeps_payloads_inert(tmp_path: Path, marker: Path, payload: str) -> None:
    value = payload.format(x=marker)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        port = server.server_address[1]
        path = _runbook(
            tmp_path,
            f"""
            from runbook import param, step
            v = param("v")

            @step
            def call(http, params):
                u = http.url("http://127.0.0.1:{port}/items/{{v}}?q={{v}}&n=1", v=params.v)
                return http.get(u).status_code
            """,
        )
        result = _run(path, params={"v": value})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert result.status == "succeeded", result.error
    [seen] = _Recorder.seen
    route, _, query = seen.partition("?")
    assert unquote(route) == "/items/" + value and route.count("/") == 2
    assert query.endswith("&n=1") and query.count("&") == 1
    assert unquote(query.split("&")[0][2:]) == value
    assert url("{v}", v=value) != value
    assert not marker.exists()
