"""Smoke tests: the suite's answer to "does the thing a user pip-installs work?".

``./dev wheels`` builds every wheel, installs them into a fresh venv (not editable), copies the
tests out of the checkout and runs ``pytest -m smoke`` there with ``RUNBOOK_SMOKE_INSTALLED=1``,
so these run against site-packages, not against the source tree. They also run in the ordinary
suite, against the editable install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

import runbook

pytestmark = pytest.mark.smoke

INSTALLED = os.environ.get("RUNBOOK_SMOKE_INSTALLED") == "1"
FIRST_PARTY = {
    "runbook-slack",
    "runbook-email",
    "runbook-postgres",
    "runbook-redis",
    "runbook-haproxy",
    "runbook-ssh",
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "runbook"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_package_under_test_is_the_installed_one_when_asked():
    location = Path(runbook.__file__).resolve()
    if INSTALLED:
        assert "site-packages" in location.parts, location
    assert metadata.version("runbook") == runbook.__version__


def test_typed_marker_is_installed():
    assert (Path(runbook.__file__).parent / "py.typed").exists()


def test_the_example_runbooks_are_not_installed_as_a_package(tmp_path: Path):
    probe = "import importlib.util as u; print(u.find_spec('runbooks'), u.find_spec('runbook'))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    missing, present = out.stdout.split(" ", 1)
    assert missing == "None", "the example runbooks/ folder is importable from site-packages"
    assert present.strip() != "None"


def test_console_script_reports_the_version(tmp_path: Path):
    out = _cli("--version", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert runbook.__version__ in out.stdout


def test_every_installed_first_party_plugin_loads(tmp_path: Path):
    installed = {d.metadata["Name"] for d in metadata.distributions()}
    expected = {name for name in installed if name.startswith("runbook-")}
    assert expected >= FIRST_PARTY, f"missing: {FIRST_PARTY - expected}"
    out = _cli("plugins", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for name in expected:
        assert name in out.stdout, f"{name} not listed by `runbook plugins`"


def test_exec_a_runbook_with_the_default_sqlite_store(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[tool.runbook]\n")
    (tmp_path / "hello.py").write_text(
        textwrap.dedent(
            """
            from runbook import param, step

            name = param("name", default="world")

            @step
            def greet(params):
                return {"greeting": "hello " + params.name}

            @step
            def shout(greet):
                return greet["greeting"].upper()
            """
        )
    )
    out = _cli("exec", "hello.py", "-p", "name=wheel", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert '"HELLO WHEEL"' in out.stdout
    assert (tmp_path / ".runbook" / "runbook.db").exists()
    runs = _cli("runs", cwd=tmp_path)
    assert runs.returncode == 0 and "succeeded" in runs.stdout


def test_the_pytest_plugin_is_registered():
    plugins = {ep.name for ep in metadata.entry_points(group="pytest11")}
    assert "runbook" in plugins
