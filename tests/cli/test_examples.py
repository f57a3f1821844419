"""The example runbooks with fakes, through the Python API: fast, no processes, no network."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import httpx
import pytest

from .helpers import EXAMPLES


@pytest.fixture
def deploy_module():
    """The example's own fakes (FakeServices, fake_http), imported like a user's test would."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import deploy

        yield deploy
    finally:
        sys.path.remove(str(EXAMPLES))
        sys.modules.pop("deploy", None)


@pytest.fixture
def migration_module():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import db_migration

        yield db_migration
    finally:
        sys.path.remove(str(EXAMPLES))
        sys.modules.pop("db_migration", None)


def deploy_fakes(mod, root: Path) -> dict:
    return {"layout": mod.Layout(root), "services": mod.FakeServices(), "http": mod.fake_http(root)}


def test_deploy_with_fakes_switches_and_stops_the_old_release(
    runbook_runner, deploy_module, tmp_path
):
    fakes = {"resources": deploy_fakes(deploy_module, tmp_path)}
    first = runbook_runner.run(EXAMPLES / "deploy.py", runner=fakes, version="1.0")
    assert first.status == "succeeded", first.error
    assert first.steps["stop_old"].status == "skipped"
    second = runbook_runner.run(EXAMPLES / "deploy.py", runner=fakes, version="1.1")
    assert second.status == "succeeded", second.error
    assert second.steps["stop_old"].output["version"] == "1.0"
    assert (tmp_path / "current").resolve().name == "1.1"
    assert not (tmp_path / "releases" / "1.0" / "server.json").exists()  # stopped


def test_deploy_with_fakes_unhealthy_release_rolls_back_in_no_wall_time(
    runbook_runner, deploy_module, tmp_path
):
    fakes = {"resources": deploy_fakes(deploy_module, tmp_path)}
    assert runbook_runner.run(EXAMPLES / "deploy.py", runner=fakes, version="1.0").ok
    bad = runbook_runner.run(EXAMPLES / "deploy.py", runner=fakes, version="1.1", fail_health=True)
    assert bad.status == "rolled_back"
    assert bad.steps["health"].status == "failed"
    assert [n for n, s in bad.steps.items() if s.status == "rolled_back"] == ["build", "start"]
    assert (tmp_path / "current").resolve().name == "1.0"
    assert not (tmp_path / "releases" / "1.1").exists()
    assert runbook_runner.clock.elapsed >= 10  # the whole health timeout, on the fake clock


def test_deploy_verify_failure_restores_everything(runbook_runner, deploy_module, tmp_path):
    fakes = deploy_fakes(deploy_module, tmp_path)
    assert runbook_runner.run(EXAMPLES / "deploy.py", runner={"resources": fakes}, version="1.0").ok
    healthy = fakes["http"]

    def broken_index(request: httpx.Request) -> httpx.Response:
        # /health is fine, so the switch happens; the page users get is broken, so verify fails.
        if request.url.path == "/":
            return httpx.Response(500, text="oops")
        answer = healthy.get(str(request.url))
        return httpx.Response(answer.status_code, content=answer.content)

    fakes = {**fakes, "http": httpx.Client(transport=httpx.MockTransport(broken_index))}
    bad = runbook_runner.run(EXAMPLES / "deploy.py", runner={"resources": fakes}, version="1.1")
    assert bad.status == "rolled_back"
    assert "index page does not show the new version" in bad.steps["verify"].error
    rolled = [n for n, s in bad.steps.items() if s.status == "rolled_back"]
    assert rolled == ["build", "start", "switch", "stop_old"]
    assert (tmp_path / "current").resolve().name == "1.0"
    assert (tmp_path / "releases" / "1.0" / "server.json").exists()  # restarted
    port = int((tmp_path / "active_port").read_text())
    assert healthy.get(f"http://127.0.0.1:{port}/health").json()["version"] == "1.0"


def test_deploy_same_version_twice_is_a_no_op(runbook_runner, deploy_module, tmp_path):
    fakes = {"resources": deploy_fakes(deploy_module, tmp_path)}
    assert runbook_runner.run(EXAMPLES / "deploy.py", runner=fakes, version="1.0").ok
    again = runbook_runner.run(EXAMPLES / "deploy.py", runner=fakes, version="1.0")
    assert again.ok
    assert again.steps["build"].status == "skipped" and again.steps["build"].reason == "when"


def version_of(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def test_migration_pauses_at_the_gate_then_approve_and_resume(runbook_runner, tmp_path):
    db = tmp_path / "demo.db"
    runner = runbook_runner.runner(resources={"database": db})
    paused = runner.run(EXAMPLES / "db_migration.py", params={"target": 2})
    assert paused.status == "paused"
    assert not db.exists()  # the backup ran, the migration did not
    runner.approve(paused.run_id, step="migrate", actor="bob", comment="ok")
    done = runner.resume(paused.run_id)
    assert done.status == "succeeded", done.error
    assert version_of(db) == 2
    assert done.steps["verify"].output == {"version": 2, "rows": {"customers": 3}}


def test_migration_failed_verify_restores_the_backup(runbook_runner, migration_module, tmp_path):
    db = tmp_path / "demo.db"
    mod = migration_module
    assert runbook_runner.run(
        EXAMPLES / "db_migration.py",
        target=2,
        runner={"protection": "none", "resources": {"database": db}},
    ).ok
    broken = mod.Migration(
        3,
        "orders (wrong)",
        "CREATE TABLE orders (id INTEGER);",
        check=lambda c: "customer_id" in mod._columns(c, "orders"),
    )
    result = runbook_runner.run(
        EXAMPLES / "db_migration.py",
        runner={
            "protection": "none",
            "resources": {"database": db, "migrations": [*mod.MIGRATIONS[:2], broken]},
        },
    )
    assert result.status == "rolled_back"
    assert "migration 3 (orders (wrong)) check failed" in result.steps["verify"].error
    assert result.steps["migrate"].status == "rolled_back"
    assert version_of(db) == 2  # restored from the backup
    with sqlite3.connect(db) as conn:
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name='orders'").fetchone()[0]
            == 0
        )


def test_migration_with_nothing_pending_skips_everything(runbook_runner, tmp_path):
    db = tmp_path / "demo.db"
    opts = {"protection": "none", "resources": {"database": db}}
    assert runbook_runner.run(EXAMPLES / "db_migration.py", runner=opts).ok
    again = runbook_runner.run(EXAMPLES / "db_migration.py", runner=opts)
    assert again.ok
    assert {n for n, s in again.steps.items() if s.status == "skipped"} == {
        "backup",
        "migrate",
        "verify",
        "cleanup",
    }


def test_deploy_health_failure_says_what_it_saw(runbook_runner, deploy_module, tmp_path):
    fakes = {"resources": deploy_fakes(deploy_module, tmp_path)}
    bad = runbook_runner.run(EXAMPLES / "deploy.py", runner=fakes, version="1.0", fail_health=True)
    assert bad.status == "rolled_back"
    assert "WaitTimeout" in bad.steps["health"].error
    assert "-> 503" in bad.steps["health"].error
