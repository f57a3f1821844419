"""The examples in docs/strategies.md run as written (``# runbook:``, ``# test:``, ``# script:``
blocks, the convention of tests/core/test_docs_examples.py)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import httpx
import pytest

from runbook import load

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"
BLOCK = re.compile(r"```python\n# (runbook|test|script): (\S+\.py)\n(.*?)```", re.S)


def blocks(kind: str) -> dict[str, str]:
    return {name: body for k, name, body in BLOCK.findall(DOC.read_text()) if k == kind}


def write(folder: Path, kind: str) -> dict[str, Path]:
    out = {}
    for name, body in blocks(kind).items():
        out[name] = folder / name
        out[name].write_text(body)
    return out


def test_the_page_has_examples():
    assert set(blocks("runbook")) == {
        "canary_release.py", "blue_green_release.py", "rolling_release.py"
    }  # fmt: skip
    assert blocks("test") and blocks("script")


def test_the_test_block_passes(pytester):
    (pytester.path / "pyproject.toml").touch()
    write(pytester.path, "runbook")
    write(pytester.path, "test")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_blue_green_block(tmp_path, runbook_runner, fake_router):
    path = write(tmp_path, "runbook")["blue_green_release.py"]
    fake_router.set_weights("web", {"blue": 100})
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    result = runbook_runner.run(path, runner={"protection": "none", "resources": {"http": http}})
    assert result.status == "succeeded", result.error
    assert result.steps["announce"].output == "web is live; old color scaled down: blue"
    assert runbook_runner.shell.calls == [
        "deployctl deploy web-green 1.8.0",
        "deployctl scale web-blue 0",
    ]
    assert fake_router.peek("web") == {"blue": 0, "green": 100}


def test_rolling_block(tmp_path, runbook_runner):
    path = write(tmp_path, "runbook")["rolling_release.py"]
    steps = list(load(path).steps)
    assert steps[:5] == [
        "release.deploy[api-01]", "release.deploy[api-02]",
        "release.health[api-01]", "release.health[api-02]", "release.batch-1",
    ]  # fmt: skip
    runbook_runner.shell.on("ssh api-03 curl*", returncode=7)
    result = runbook_runner.run(path, runner={"resources": {}})
    assert result.status == "rolled_back"
    undone = [c.split()[1] for c in runbook_runner.shell.calls if "rollback" in c]
    assert sorted(undone[:2]) == ["api-03", "api-04"]  # newest batch first
    assert sorted(undone[2:]) == ["api-01", "api-02"]
    assert result.hosts["api-03"] == "failed" and result.hosts["api-01"] == "rolled_back"


@pytest.mark.parametrize("name", sorted(blocks("script")))
def test_script_blocks(name, tmp_path):
    script = tmp_path / name
    script.write_text(blocks("script")[name])
    runpy.run_path(str(script), run_name="__main__")
