"""Strategy options given as ``param(...)``: expanded with defaults for ``list``, re-expanded with
the run's values when it starts (and on approve/resume), bad values are usage errors."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from runbook import load
from runbook.errors import DefinitionError, ParamError

CANARY = """
from runbook import param
from runbook.strategies import canary

weights = param("weights", type=list, default=[5, 50, 100])
bake = param("bake", type=float, default=300)
release = canary("web", weights=weights, bake=bake, pause_at=PAUSE)
"""


def write(tmp_path: Path, source: str, **replace: str) -> Path:
    for key, value in replace.items():
        source = source.replace(key, value)
    path = tmp_path / "release.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture(autouse=True)
def on_stable(fake_router: Any) -> None:
    fake_router.set_weights("web", {"stable": 100})
    fake_router.history.clear()


def test_list_shows_the_defaults(tmp_path: Path) -> None:
    rb = load(write(tmp_path, CANARY, PAUSE="[]"))
    assert list(rb.steps) == [f"release.{k}-{w}" for w in (5, 50, 100) for k in ("shift", "bake")]


def test_run_uses_the_values_given_with_p(
    runbook_runner: Any, fake_router: Any, fake_clock: Any, tmp_path: Path
) -> None:
    path = write(tmp_path, CANARY, PAUSE="[]")
    result = runbook_runner.run(path, weights="10,100", bake="30")
    assert result.status == "succeeded", result.error
    assert list(result.steps) == [
        "release.shift-10", "release.bake-10", "release.shift-100", "release.bake-100",
    ]  # fmt: skip
    assert sum(fake_clock.sleeps) == pytest.approx(60)
    assert fake_router.writes == [
        ("set_weights", "web", {"canary": 10, "stable": 90}),
        ("set_weights", "web", {"canary": 100, "stable": 0}),
    ]


def test_approve_and_resume_see_the_runs_own_steps(
    runbook_runner: Any, fake_router: Any, tmp_path: Path
) -> None:
    path = write(tmp_path, CANARY, PAUSE="[100]")
    paused = runbook_runner.runner(actor="alice").run(path, params={"weights": "20,100"})
    assert paused.status == "paused"
    assert "release.shift-20" in paused.steps and "release.shift-5" not in paused.steps
    other = runbook_runner.runner(actor="bob")
    other.approve(paused.run_id, actor="bob")  # finds release.approve-100 of *this* run
    resumed = other.resume(paused.run_id)
    assert resumed.status == "succeeded", resumed.error
    assert list(resumed.steps)[:2] == ["release.shift-20", "release.bake-20"]
    assert fake_router.peek("web") == {"canary": 100, "stable": 0}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"weights": "50,10"},
            "parameter 'bake', 'weights': canary(): weights= must be strictly increasing, "
            "got [50, 10]",
        ),
        ({"weights": "5,x"}, "parameter 'weights': expected a list of int, got ['5', 'x']"),
        ({"bake": "-1"}, "canary(): bake= must be a number of seconds >= 0, got -1.0"),
        ({"weights": "5,100", "bake": "0"}, None),
    ],
)
def test_bad_values_are_usage_errors_naming_the_parameter(
    runbook_runner: Any,
    fake_router: Any,
    tmp_path: Path,
    given: dict[str, str],
    message: str | None,
) -> None:
    path = write(tmp_path, CANARY, PAUSE="[]")
    if message is None:
        assert runbook_runner.run(path, **given).status == "succeeded"
        return
    with pytest.raises(ParamError) as info:
        runbook_runner.run(path, **given)
    assert message in str(info.value)
    assert fake_router.writes == []


def test_a_param_without_default_or_example_cannot_be_listed(tmp_path: Path) -> None:
    source = CANARY.replace("default=[5, 50, 100]", "").replace(", )", ")")
    with pytest.raises(DefinitionError) as info:
        load(write(tmp_path, source, PAUSE="[]"))
    assert "canary(): option param 'weights' needs a default or an example=" in str(info.value)
    assert info.value.line == 7


def test_rolling_batch_from_p(runbook_runner: Any, tmp_path: Path) -> None:
    source = """
    from runbook import param
    from runbook.strategies import rolling

    batch = param("batch", type=int, default=2)

    def install(host, calls):
        calls.append(host.name)

    release = rolling(["a", "b", "c", "d"], batch=batch, deploy=install)
    """
    calls: list[str] = []
    path = write(tmp_path, source)
    result = runbook_runner.run(path, runner={"resources": {"calls": calls}}, batch="1")
    assert result.status == "succeeded", result.error
    assert [n for n in result.steps if "batch" in n] == [f"release.batch-{n}" for n in (1, 2, 3, 4)]
    assert list(result.steps)[:2] == ["release.deploy[a]", "release.batch-1"]
    assert calls == ["a", "b", "c", "d"]


def test_analysis_arguments_from_p(runbook_runner: Any, tmp_path: Path) -> None:
    import httpx

    source = """
    from runbook import analysis, param
    from runbook.strategies import canary

    url = param("prometheus_url", default="http://127.0.0.1:9090")
    count = param("count", type=int, default=5)
    ok = analysis.prometheus("up", url=url, interval=10, count=count, success="result >= 1",
                             failure="result < 1")
    release = canary("web", weights=[100], analysis=ok)
    """
    seen: list[str] = []

    def prom(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.copy_with(params=None)))
        body = {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
        }
        return httpx.Response(200, json=body)

    http = httpx.Client(transport=httpx.MockTransport(prom))
    result = runbook_runner.run(
        write(tmp_path, source),
        runner={"resources": {"http": http}},
        prometheus_url="http://prom.other:9091",
        count="2",
    )
    assert result.status == "succeeded", result.error
    assert seen == ["http://prom.other:9091/api/v1/query"] * 2


def test_exec_with_a_bad_value_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: Any) -> None:
    from click.testing import CliRunner

    from runbook.cli import cli

    (tmp_path / "runbook.toml").write_text('router = "memory://params-cli"\n')
    path = write(tmp_path, CANARY, PAUSE="[]")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["exec", str(path), "-p", "weights=50,10", "--yes"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "weights= must be strictly increasing, got [50, 10]" in result.stderr
