"""Hostile input gets one clear line and its documented exit code, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runbook import Runner
from runbook.errors import PluginError
from runbook.plugins import Plugins

RUNBOOK = (
    "from runbook import param, step\nv = param('v', default='x')\n@step\ndef a():\n    return 1\n"
)


def _cli(tmp_path: Path, *args: bytes | str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"runbook",
            *(a if isinstance(a, bytes) else a.encode() for a in args),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "rb.py").write_text(RUNBOOK)
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('needs a license server')\n")
    (tmp_path / "typo_plugin.py").write_text("def runbook_configure(config)\n    pass\n")
    return tmp_path


def _one_clear_line(proc: subprocess.CompletedProcess, code: int, *needles: bytes) -> None:
    assert proc.returncode == code, proc.stderr
    assert b"Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in proc.stderr


@pytest.mark.slow
def test_non_utf8_param_value(project: Path) -> None:
    proc = _cli(project, "exec", "rb.py", "-p", b"v=1.0\xff\xfe")
    _one_clear_line(proc, 2, b"-p v: the value is not valid UTF-8")
    assert not (project / ".runbook").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("broken_plugin", b"plugin module 'broken_plugin' failed to import: RuntimeError: needs"),
        ("typo_plugin", b"plugin module 'typo_plugin' has a syntax error"),
        ("no_such_plugin_x", b"cannot import plugin module 'no_such_plugin_x'"),
        ("os", b"plugin module 'os' implements no runbook hooks"),
    ],
)
def test_bad_plugin_modules(project: Path, module: str, message: bytes) -> None:
    for command in (["exec", "rb.py"], ["list", "rb.py"]):
        proc = _cli(project, *command, "-P", module)
        _one_clear_line(proc, 2, message)


def test_plugins_refuse_modules_without_hooks_in_python_too() -> None:
    with pytest.raises(PluginError, match="'json' implements no runbook hooks"):
        Plugins(["json"], entry_points=False)
    Plugins(["runbook.resources"], entry_points=False)  # a real plugin module is fine


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("float('nan')", "returned NaN or Infinity, which is not JSON"),
        ("{'ratio': float('inf')}", "returned NaN or Infinity, which is not JSON"),
        ("[1, -float('inf')]", "returned NaN or Infinity, which is not JSON"),
        ("object()", "returned an object, which is not JSON-serialisable"),
        ("os.fsdecode(b'file-\\xff')", "returned text that is not valid Unicode"),
        ("{'files': [os.fsdecode(b'\\xff')]}", "returned text that is not valid Unicode"),
    ],
)
def test_nan_and_infinity_fail_at_the_step_boundary(
    tmp_path: Path, expr: str, message: str
) -> None:
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / f"nan_{uuid.uuid4().hex[:6]}.py"
    path.write_text(
        f"import os\nfrom runbook import step\n@step\ndef measure():\n    return {expr}\n"
    )
    result = Runner(actor="t", store=f"memory://{uuid.uuid4().hex}").run(path)
    assert result.status == "failed"
    assert message in result.steps["measure"].error
    assert result.steps["measure"].output is None


def _cli_default(tmp_path: Path) -> Runner:
    """The CLI's default store and trail (SQLite + JSONL), in ``tmp_path``."""
    return Runner(
        actor="t",
        store=f"sqlite:///{tmp_path}/runbook.db",
        audit=[f"jsonl://{tmp_path}/audit.jsonl"],
        locks=None,
        entry_points=False,
    )


def test_a_lone_surrogate_output_fails_its_step_and_is_recorded_on_the_cli_default(
    tmp_path: Path,
) -> None:
    """Not an audit refusal after the step ran: the trail and the store record the failure."""
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "listing.py"
    path.write_text(
        "import os\nfrom runbook import step\n"
        "@step\ndef listing():\n    return os.fsdecode(b'file-\\xff')\n"
    )
    runner = _cli_default(tmp_path)
    with runner:
        result = runner.run(path)
        assert result.status == "failed"
        assert "not valid Unicode" in result.steps["listing"].error
        assert runner.store is not None
        assert runner.store.get_steps(result.run_id)["listing"].status == "failed"
    trail = (tmp_path / "audit.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in trail]
    assert "step_failed" in kinds and kinds[-1] == "run_finished"


def test_finite_floats_pass(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "ok_float.py"
    path.write_text("from runbook import step\n@step\ndef measure():\n    return 0.25\n")
    result = Runner(actor="t", store=f"memory://{uuid.uuid4().hex}").run(path)
    assert result.steps["measure"].output == 0.25


def test_a_failure_quoting_a_lone_surrogate_is_recorded_with_its_escape(tmp_path: Path) -> None:
    """An exception (or a log line) quoting a name os.fsdecode made of non-UTF-8 bytes: the
    step fails as usual, and the trail and the store record it, the surrogate escaped."""
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "broken.py"
    path.write_text(
        "import os\nfrom runbook import step\n"
        "@step\ndef boom(log):\n"
        "    log.info('listing ' + os.fsdecode(b'dir-\\xfe'))\n"
        "    raise RuntimeError('bad file ' + os.fsdecode(b'file-\\xff'))\n"
    )
    runner = _cli_default(tmp_path)
    with runner:
        result = runner.run(path)
        assert result.status == "failed" and "AuditError" not in (result.error or "")
        assert result.steps["boom"].error == "RuntimeError: bad file file-\\udcff"
        assert runner.store is not None
        assert runner.store.get_steps(result.run_id)["boom"].status == "failed"
    trail = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    failed = next(event for event in trail if event["kind"] == "step_failed")
    assert failed["data"]["error"] == "RuntimeError: bad file file-\\udcff"
    assert failed["data"]["log"][0]["message"] == "listing dir-\\udcfe"
    assert "file-\\udcff" in failed["data"]["traceback"]


def test_command_output_that_is_not_utf8_is_kept_escaped_not_a_decode_error() -> None:
    # A binary or Latin-1 output (a log, a file name) failed the step with UnicodeDecodeError.
    from runbook.clock import SystemClock
    from runbook.resources import Shell

    result = Shell(SystemClock())(["sh", "-c", r"printf 'caf\351\n'; printf '\377' >&2"])
    assert (result.stdout, result.stderr) == ("caf\\xe9\n", "\\xff")
    assert json.dumps(result.stdout).encode()  # storable, auditable: valid Unicode


def test_input_text_os_fsdecode_made_is_sent_as_its_bytes() -> None:
    from runbook.clock import SystemClock
    from runbook.resources import Shell

    name = os.fsdecode(b"file-\xff")  # 'file-\udcff': no UTF-8 form
    result = Shell(SystemClock())(["od", "-An", "-tx1"], input=name)
    assert result.stdout.split() == ["66", "69", "6c", "65", "2d", "ff"]
