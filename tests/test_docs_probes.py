"""The examples in docs/probes.md run as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import httpx
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "probes.md"
BLOCK = re.compile(r"```python\n# (runbook|script): (\S+\.py)\n(.*?)```", re.S)


def blocks(kind: str) -> dict[str, str]:
    return {name: body for k, name, body in BLOCK.findall(DOC.read_text()) if k == kind}


def runbook(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(blocks("runbook")[name])
    return path


def test_the_page_has_examples():
    assert set(blocks("runbook")) == {
        "wait_for_replica.py", "branch_on_health.py", "stop_when_unsure.py"
    }  # fmt: skip
    assert set(blocks("script")) == {"http_probe_example.py"}


def test_script_block(tmp_path):
    script = tmp_path / "http_probe_example.py"
    script.write_text(blocks("script")["http_probe_example.py"])
    runpy.run_path(str(script), run_name="__main__")


def test_wait_for_replica(tmp_path, runbook_runner, fake_clock):
    runbook_runner.shell.on("pg-lag-check*", returncode=1, times=3)
    result = runbook_runner.run(runbook(tmp_path, "wait_for_replica.py"))
    assert result.status == "succeeded", result.error
    assert result.steps["replica_caught_up"].output == "pg-lag-check --max-seconds 5: exit 0"
    assert len(fake_clock.sleeps) == 3


def test_wait_for_replica_times_out_with_what_it_saw(tmp_path, runbook_runner):
    runbook_runner.shell.on("pg-lag-check*", returncode=1, stderr="lag 40s")
    result = runbook_runner.run(runbook(tmp_path, "wait_for_replica.py"))
    assert result.status == "failed"
    assert "replica lag under 5s: not true after 600s" in result.steps["replica_caught_up"].error
    assert "last result: unhealthy: pg-lag-check --max-seconds 5: exit 1: lag 40s" in (
        result.steps["replica_caught_up"].error
    )


@pytest.mark.parametrize(
    ("response", "ran"),
    [
        (httpx.Response(200), "rotate_keys"),
        (httpx.Response(503), "restart"),
        (httpx.ReadTimeout("timed out"), "page_oncall"),
        (httpx.Response(302, headers={"location": "/login"}), "page_oncall"),
    ],
    ids=["healthy", "unhealthy", "timeout", "redirect"],
)
def test_branch_on_health(tmp_path, runbook_runner, response, ran):
    def handler(request):
        if isinstance(response, Exception):
            raise response
        return response

    http = httpx.Client(transport=httpx.MockTransport(handler))
    result = runbook_runner.run(
        runbook(tmp_path, "branch_on_health.py"), runner={"resources": {"http": http}}
    )
    assert result.status == "succeeded", result.error
    statuses = {n: s.status for n, s in result.steps.items() if n != "api_health"}
    assert [n for n, s in statuses.items() if s == "succeeded"] == [ran]
    assert runbook_runner.notifier.messages if ran == "page_oncall" else True


@pytest.mark.parametrize(
    ("stdout", "status", "migrate"),
    [("1\n", "succeeded", "succeeded"), ("3\n", "succeeded", "skipped"),
     ("ERROR: relation does not exist\n", "failed", "pending")],
)  # fmt: skip
def test_stop_when_unsure(tmp_path, runbook_runner, stdout, status, migrate):
    runbook_runner.shell.on("dbctl schema-version", stdout=stdout)
    result = runbook_runner.run(runbook(tmp_path, "stop_when_unsure.py"))
    assert result.status == status
    assert result.steps["migrate"].status == migrate
    assert runbook_runner.shell.ran("dbctl migrate*") == (migrate == "succeeded")
