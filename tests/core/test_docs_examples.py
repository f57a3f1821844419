"""The examples in docs/runbooks.md, docs/testing.md and docs/python-api.md run as written.

Conventions in the pages: a ``python`` block whose first line is ``# runbook: NAME.py`` is a whole
runbook, ``# test: NAME.py`` a pytest module, ``# script: NAME.py`` a script run from the folder
holding that page's runbooks.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from runbook import Runner, load

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```python\n# (runbook|test|script): (\S+\.py)\n(.*?)```", re.S)


def blocks(page: str, kind: str) -> dict[str, str]:
    return {name: body for k, name, body in BLOCK.findall((DOCS / page).read_text()) if k == kind}


def write_all(folder: Path, page: str, kind: str) -> dict[str, Path]:
    (folder / "pyproject.toml").touch()
    out = {}
    for name, body in blocks(page, kind).items():
        out[name] = folder / name
        out[name].write_text(body)
    return out


def test_the_pages_have_examples():
    assert len(blocks("runbooks.md", "runbook")) >= 6
    assert blocks("testing.md", "test") and blocks("testing.md", "runbook")
    assert blocks("python-api.md", "script") and blocks("python-api.md", "runbook")


def test_runbooks_page_examples(tmp_path, runbook_runner, fake_clock):
    paths = write_all(tmp_path, "runbooks.md", "runbook")
    results = {}
    # The pages' own resources reach "real" systems: a test replaces them (DESIGN 18).
    fakes = {
        "injection.py": {"registry": "registry.dev.internal"},
        "resources.py": {"db": {"dsn": "postgresql://fake/app"}},
    }
    for name, path in paths.items():
        runner = {"protection": "none", "resources": fakes.get(name, {})}
        results[name] = runbook_runner.run(path, runner=runner)
        assert results[name].status == "succeeded", f"{name}: {results[name].error}"

    assert results["hello.py"].steps["shout"].output == "HELLO WORLD"
    injection = results["injection.py"]
    assert injection.steps["push"].output == {"pushed": "web:1.4.2"}
    assert runbook_runner.shell.ran("docker push registry.dev.internal/web:1.4.2")
    assert "change_recorded" in [e.kind for e in injection.audit]
    branches = {n: (s.status, s.output) for n, s in results["branches.py"].steps.items()}
    assert branches == {
        "schema_version": ("succeeded", 7),
        "migrate": ("succeeded", {"migrated_to": 8}),
        "verify_migration": ("succeeded", 8),
        "report": ("succeeded", "migrated"),
        "warm_cache": ("succeeded", "warm"),
    }
    assert results["retries.py"].steps["wait_for_health"].attempts == 3
    assert len(fake_clock.sleeps) == 2
    assert results["rollback.py"].steps["switch"].output == {"from": None, "to": "green"}
    rb = load(paths["resources.py"])
    assert rb.module.EVENTS == []  # the test above never connected
    assert Runner(actor="tester").run(rb).status == "succeeded"  # for real: set up, torn down
    assert rb.module.EVENTS == ["connect dev", "disconnect"]


def test_branches_example_skips_when_already_current(tmp_path, runbook_runner):
    path = write_all(tmp_path, "runbooks.md", "runbook")["branches.py"]
    path.write_text(path.read_text().replace("return 7", "return 8"))
    steps = runbook_runner.run(path).steps
    assert {n: s.status for n, s in steps.items()} == {
        "schema_version": "succeeded",
        "migrate": "skipped",
        "verify_migration": "skipped",
        "report": "succeeded",
        "warm_cache": "succeeded",
    }
    assert steps["report"].output == "already current"


def test_rollback_example_rolls_back_in_reverse(tmp_path, runbook_runner, fake_router):
    path = write_all(tmp_path, "runbooks.md", "runbook")["rollback.py"]
    fake_router.switch("web", to="blue")
    fake_router.fail("switch", RuntimeError("mesh down"))
    result = runbook_runner.run(path)
    assert result.status == "rolled_back", result.error
    assert [e.step for e in result.audit if e.kind == "rollback_succeeded"] == ["switch", "stage"]
    assert runbook_runner.shell.calls[-1] == "deployctl uninstall web-green"
    assert fake_router.active("web") == "blue"


def test_testing_page_examples(pytester):
    write_all(pytester.path, "testing.md", "runbook")
    write_all(pytester.path, "testing.md", "test")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(
        passed=len(
            re.findall(r"^def test_", "\n".join(blocks("testing.md", "test").values()), re.M)
        )
    )


def test_python_api_page_examples(tmp_path, monkeypatch, capsys):
    write_all(tmp_path, "python-api.md", "runbook")
    monkeypatch.chdir(tmp_path)
    for name, body in blocks("python-api.md", "script").items():
        script = tmp_path / name
        script.write_text(body.replace("memory://docs-", f"memory://docs-{tmp_path.name}-"))
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert re.search(r"runbook approve \S+ --step switch", out)
    assert "has ended (succeeded); nothing to resume" in out


@pytest.mark.parametrize("page", ["runbooks.md", "testing.md", "python-api.md", "plugins.md"])
def test_examples_are_marked_consistently(page):
    """A typo in a marker would silently drop an example from these tests."""
    text = (DOCS / page).read_text()
    for line in re.findall(r"```python\n(# \w+:.*)\n", text):
        assert re.fullmatch(r"# (runbook|test|script): \S+\.py", line), line
