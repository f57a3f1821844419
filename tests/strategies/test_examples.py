"""The example runbooks in runbooks/ do what their docstrings say, offline, with fakes."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from runbook.cli import cli
from runbook.errors import ApprovalError

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


def client(handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def prometheus(ratios: dict[int, str | None], router) -> httpx.Client:
    """Answers the canary's 5xx ratio for the weight the router is at (None: no samples)."""

    def handler(request: httpx.Request) -> httpx.Response:
        ratio = ratios.get(router.peek("web").get("canary"), "0.001")
        result = [] if ratio is None else [{"value": [0, ratio]}]
        return httpx.Response(200, json={"status": "success", "data": {"result": result}})

    return client(handler)


def run(runbook_runner, name: str, env: str = "dev", resources=None, **params):
    runner = {"protection": "none", "resources": resources or {}}
    return runbook_runner.run(RUNBOOKS / f"{name}.py", env=env, runner=runner, **params)


@pytest.fixture
def fake_router(fake_router):
    fake_router.set_weights("web", {"stable": 100})
    fake_router.set_weights("orders", {"stable": 100})
    fake_router.history.clear()
    return fake_router


def test_canary_example_releases_and_promotes(runbook_runner, fake_router, fake_clock):
    http = prometheus({}, fake_router)
    result = run(runbook_runner, "canary", resources={"http": http}, version="2.4.1")
    assert result.status == "succeeded", result.error
    assert [w[2] for w in fake_router.writes] == [
        {"canary": 5, "stable": 95}, {"canary": 25, "stable": 75}, {"canary": 50, "stable": 50},
        {"canary": 100, "stable": 0}, {"stable": 100, "canary": 0},
    ]  # fmt: skip
    assert runbook_runner.shell.calls == [
        "deployctl deploy web-canary 2.4.1 --wait",
        "deployctl deploy web-stable 2.4.1 --wait",
        "deployctl scale web-canary 0",
    ]
    assert sum(fake_clock.sleeps) == pytest.approx(4 * 300)


@pytest.mark.parametrize(
    ("ratio", "error"),
    [("0.2", "unhealthy: canary 5xx ratio 0.2000 (limit 0.01)"),
     (None, "ambiguous: no canary traffic in the last 5m")],
    ids=["errors", "no-data"],
)  # fmt: skip
def test_canary_example_aborts_on_bad_or_missing_metrics(runbook_runner, fake_router, ratio, error):
    http = prometheus({25: ratio}, fake_router)
    result = run(runbook_runner, "canary", resources={"http": http}, version="2.4.1")
    assert result.status == "rolled_back"
    assert error in result.steps["release.analyze-25"].error
    assert fake_router.peek("web") == {"canary": 0, "stable": 100}
    assert runbook_runner.shell.calls[-1] == "deployctl scale web-canary 0"
    assert result.steps["promote"].status == "pending"


def test_canary_example_pauses_before_half_the_traffic(runbook_runner, fake_router):
    http = prometheus({}, fake_router)
    runner = runbook_runner.runner(resources={"http": http})
    result = runner.run(RUNBOOKS / "canary.py", params={"version": "2.4.1"})
    assert result.status == "paused"
    assert result.steps["release.approve-50"].status == "awaiting_approval"
    assert fake_router.peek("web") == {"canary": 25, "stable": 75}


def health(unhealthy: set[str]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host in unhealthy:
            return httpx.Response(503, json={"status": "starting"})
        return httpx.Response(200, json={"status": "ok"})

    return client(handler)


def test_rolling_example_upgrades_every_host(runbook_runner):
    result = run(runbook_runner, "rolling", resources={"http": health(set())}, version="5.2.0")
    assert result.status == "succeeded", result.error
    installs = [c.split()[1] for c in runbook_runner.shell.calls if "deployctl install" in c]
    assert sorted(installs[:2]) == ["api-01", "api-02"]
    assert sorted(installs[2:4]) == ["api-03", "api-04"]
    assert installs[4:] == ["api-05"]
    assert [n for n in result.steps if "api-01" in n or "batch" in n] == [
        "release.deploy[api-01]",
        "release.health[api-01]",
        "release.batch-1",
        "release.batch-2",
        "release.batch-3",
    ]
    assert result.hosts == {f"api-0{i}": "succeeded" for i in range(1, 6)}


def test_rolling_example_rolls_back_newest_first(runbook_runner):
    result = run(runbook_runner, "rolling", resources={"http": health({"api-03"})}, version="5.2.0")
    assert result.status == "rolled_back"
    assert "api-03 healthy" in result.steps["release.health[api-03]"].error
    assert "failure budget exceeded after batch 2" in result.steps["release.batch-2"].error
    undone = [c.split()[1] for c in runbook_runner.shell.calls if "deployctl rollback" in c]
    assert sorted(undone[:2]) == ["api-03", "api-04"] and sorted(undone[2:]) == ["api-01", "api-02"]
    assert not any("api-05" in c for c in runbook_runner.shell.calls)
    assert result.hosts["api-05"] == "skipped" and result.hosts["api-03"] == "failed"


@pytest.mark.parametrize(
    ("env", "ran", "skipped"),
    [
        (
            "dev",
            {"deploy", "announce"},
            {"change_approved", "smoke", "release.shift-10", "promote"},
        ),
        ("staging", {"deploy", "smoke", "announce"}, {"change_approved", "release.shift-10"}),
    ],
)
def test_multi_env_paths(runbook_runner, fake_router, env, ran, skipped):
    result = run(
        runbook_runner, "multi_env", env=env, resources={"http": health(set())}, version="3.1.0"
    )
    assert result.status == "succeeded", result.error
    statuses = {n: s.status for n, s in result.steps.items()}
    assert {n for n in ran if statuses[n] == "succeeded"} == ran
    assert {n for n in skipped if statuses[n] == "skipped"} == skipped
    assert fake_router.writes == []
    assert runbook_runner.shell.calls[0].startswith(
        f"deployctl deploy orders-stable 3.1.0 --env {env}"
    )


def slo(p99: float) -> httpx.Client:
    return client(lambda request: httpx.Response(200, json={"p99_ms": p99}))


def test_multi_env_prod_needs_two_other_approvers_then_canaries(runbook_runner, fake_router):
    http = slo(120)
    alice = runbook_runner.runner(env="prod", actor="alice", resources={"http": http})
    paused = alice.run(RUNBOOKS / "multi_env.py", params={"version": "3.1.0"})
    assert paused.status == "paused"
    assert paused.steps["change_approved"].status == "awaiting_approval"
    assert runbook_runner.shell.calls == []  # nothing deployed before the approval
    with pytest.raises(ApprovalError):
        alice.approve(paused.run_id, actor="alice")
    alice.approve(paused.run_id, actor="bob")
    alice.approve(paused.run_id, actor="carol")
    done = runbook_runner.runner(env="prod", actor="alice", resources={"http": http}).resume(
        paused.run_id
    )
    assert done.status == "succeeded", done.error
    assert [w[2]["canary"] for w in fake_router.writes] == [10, 50, 100, 0]
    assert fake_router.peek("orders") == {"stable": 100, "canary": 0}
    assert runbook_runner.shell.calls[0].startswith("deployctl deploy orders-canary 3.1.0")


def test_multi_env_prod_slow_canary_aborts(runbook_runner, fake_router):
    result = run(
        runbook_runner, "multi_env", env="prod", resources={"http": slo(900)}, version="3.1.0"
    )
    assert result.status == "rolled_back"
    assert "canary p99 900 ms (limit 300)" in result.steps["release.analyze-10"].error
    assert fake_router.peek("orders") == {"canary": 0, "stable": 100}
    assert runbook_runner.shell.calls[-1] == "deployctl rollback orders-canary --env prod"


def load_schema_db(tmp_path: Path):
    from runbook.collect import load

    return load(RUNBOOKS / "schema_branch.py").module.SchemaDB(tmp_path / "app.db")


def version_of(path: Path) -> list:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT version FROM schema_version").fetchall()


def test_schema_branch_migrates_when_behind_and_skips_when_current(runbook_runner, tmp_path):
    db = load_schema_db(tmp_path)
    first = run(runbook_runner, "schema_branch", resources={"schema_db": db})
    assert first.status == "succeeded", first.error
    assert first.steps["migrate"].output == {"applied": [1, 2, 3]}
    assert version_of(db.path) == [(3,)]
    again = run(runbook_runner, "schema_branch", resources={"schema_db": db})
    assert again.status == "succeeded"
    assert {n: s.status for n, s in again.steps.items()} == {
        "schema": "succeeded", "known_schema": "succeeded", "backup": "skipped",
        "migrate": "skipped", "verify": "succeeded",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        ("CREATE TABLE accounts (id INTEGER)", "tables ['accounts'] but no schema_version"),
        ("CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES (1);"
         "INSERT INTO schema_version VALUES (2)", "schema_version holds [(1,), (2,)]"),
        ("CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES (7)",
         "version 7 is not one this runbook knows (0-3)"),
    ],
    ids=["no-version-table", "two-rows", "from-the-future"],
)  # fmt: skip
def test_schema_branch_stops_on_ambiguous_state(runbook_runner, tmp_path, setup, why):
    db = load_schema_db(tmp_path)
    with sqlite3.connect(db.path) as conn:
        conn.executescript(setup)
    before = db.path.read_bytes()
    result = run(runbook_runner, "schema_branch", resources={"schema_db": db})
    assert result.status == "failed"
    assert f"Ambiguous: probe was ambiguous: {why}" in result.steps["known_schema"].error
    assert result.steps["schema"].output["outcome"] == "ambiguous"
    assert result.steps["migrate"].status == "pending"
    assert db.path.read_bytes() == before


def test_schema_branch_unreadable_file_is_ambiguous(tmp_path):
    db = load_schema_db(tmp_path)
    db.path.write_text("not a database")
    assert db.read_version().ambiguous


@pytest.mark.parametrize(
    ("name", "params"),
    [("canary", ["-p", "version=2.4.1"]), ("rolling", ["-p", "version=5.2.0"]),
     ("multi_env", ["-p", "version=3.1.0", "--env", "prod"]), ("schema_branch", [])],
)  # fmt: skip
def test_examples_dry_run_from_the_cli(tmp_path, monkeypatch, name, params):
    monkeypatch.chdir(tmp_path)
    store = f"memory://{uuid.uuid4().hex}"
    out = CliRunner().invoke(
        cli,
        ["exec", str(RUNBOOKS / f"{name}.py"), "--dry-run", "--json", "--store", store, *params],
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["status"] == "succeeded"
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the demo database
