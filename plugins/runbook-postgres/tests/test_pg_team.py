"""Whole runs on the PostgreSQL backends, as a team uses them: several "hosts" share one database.

Each host is a ``Runner`` with its own provider objects (own pools), which is what separate
processes on separate machines have; a crashed host is a real process SIGKILLed mid-step.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from runbook_postgres.audit import PostgresSink
from runbook_postgres.locks import PostgresLocks
from runbook_postgres.store import PostgresStore

from runbook import Runner
from runbook.errors import UsageError

pytestmark = pytest.mark.service

RUNBOOK = '''
"""Deploy with a gate."""
from runbook import step

lock = "web-{env}"


@step
def plan():
    return {"target": "green"}


@step(approval=True)
def switch(plan, ctx):
    return {"to": plan["target"], "token": ctx.fencing_token}


@step
def verify(switch):
    return switch["to"]
'''


@contextmanager
def host(pg_url: str, actor: str, **options) -> Iterator[Runner]:
    store, sink, locks = PostgresStore(pg_url), PostgresSink(pg_url), PostgresLocks(pg_url)
    try:
        yield Runner(
            env="prod",
            store=store,
            audit=[sink],
            locks=locks,
            actor=actor,
            protection="standard",
            **options,
        )
    finally:
        for provider in (store, sink, locks):
            provider.close()


def test_start_on_one_host_approve_on_another_resume_on_a_third(
    pg_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "deploy.py"
    path.write_text(RUNBOOK)
    with host(pg_url, "alice") as a:
        paused = a.run(path)
    assert paused.status == "paused"
    with host(pg_url, "bob") as b:
        b.approve(paused.run_id, step="switch", actor="bob", comment="canary ok")
    with host(pg_url, "carol") as c:
        done = c.resume(paused.run_id)
    assert done.status == "succeeded"
    assert done.steps["verify"].output == "green"
    assert done.steps["switch"].output["token"] >= 1

    store, sink = PostgresStore(pg_url), PostgresSink(pg_url)
    try:
        assert store.get_run(paused.run_id).status == "succeeded"
        assert [a.actor for a in store.approvals(paused.run_id)] == ["bob"]
        kinds = [e.kind for e in sink.events()]
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
        assert "approval_granted" in kinds and "run_resumed" in kinds
        assert sink.verify().ok
    finally:
        store.close()
        sink.close()


CRASHING = '''
"""Dies in the middle of a step, like a host losing power."""
import os, signal
from runbook import step

lock = "db-{env}"


@step
def backup():
    return "backup-1"


@step
def migrate(backup):
    marker = os.environ["RUNBOOK_TEST_MARKER"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "migrated"


@step
def report(migrate):
    return migrate
'''

DRIVER = """
import sys
from runbook import Runner
from runbook.errors import UsageError
url, path = sys.argv[1], sys.argv[2]
Runner(env="prod", store=url, audit=[url], locks=url, actor="alice", lease=1.0).run(path)
"""


@pytest.mark.slow
def test_a_run_whose_host_died_is_resumed_elsewhere(
    pg_url: str, tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "migrate.py"
    path.write_text(CRASHING)
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv("RUNBOOK_TEST_MARKER", str(marker))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), pg_url, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    assert marker.exists()

    store = PostgresStore(pg_url)
    try:
        (record,) = store.list_runs()
        assert record.status == "running"
        steps = store.get_steps(record.run_id)
        assert steps["backup"].status == "succeeded" and steps["migrate"].status == "running"
    finally:
        store.close()

    with host(pg_url, "bob", lease=1.0, lock_timeout=10.0) as b:
        with pytest.raises(UsageError, match="not idempotent"):
            b.resume(record.run_id)
        done = b.resume(record.run_id, retry_interrupted=True)
    assert done.status == "succeeded"
    assert done.steps["report"].output == "migrated"
    store = PostgresStore(pg_url)
    try:
        (decision,) = store.interrupt_decisions(record.run_id)
        assert (decision.step, decision.choice) == ("migrate", "retry")
    finally:
        store.close()
