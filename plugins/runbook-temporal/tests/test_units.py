"""The plugin's pure parts, without a server: URL, plan, shadow DAG, gates, the banked clock."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from runbook_temporal import messages as M
from runbook_temporal.client import TemporalRuns, relative
from runbook_temporal.dag import shadow
from runbook_temporal.runtime import BankedClock
from runbook_temporal.spec import plan_of
from runbook_temporal.url import TemporalURL
from temporalio.service import RPCError, RPCStatusCode

from runbook import load
from runbook.audit.query import AuditQuery
from runbook.coordinator import Coordinator
from runbook.errors import RunbookError, UsageError
from runbook.runner import Runner
from runbook.testing.fakes import FakeClock

# -- the URL ---------------------------------------------------------------------------------------


def test_url_defaults_and_options() -> None:
    url = TemporalURL.parse("temporal://127.0.0.1:7233")
    assert (url.address, url.namespace, url.queue, url.heartbeat) == (
        "127.0.0.1:7233",
        "default",
        "runbook",
        10.0,
    )
    url = TemporalURL.parse("temporal://tmp.internal?namespace=ops&queue=deploys&heartbeat=2.5")
    assert (url.address, url.namespace, url.queue, url.heartbeat) == (
        "tmp.internal:7233",
        "ops",
        "deploys",
        2.5,
    )
    assert TemporalURL.parse(str(url)) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("local://", "not a temporal:// executor URL"),
        ("temporal://", "without a host"),
        ("temporal://h:7233?nmespace=x", "unknown option.*nmespace"),
        ("temporal://h:7233?heartbeat=soon", "heartbeat must be seconds"),
        ("temporal://h:7233?heartbeat=0", "heartbeat must be > 0"),
        ("temporal://u:secret@h:7233", "take no credentials"),
        ("temporal://h:notaport", r"^executor: temporal://h:\*\*\*: the port is not a number$"),
        ("temporal://h:99999", r"^executor: temporal://h:\*\*\*: the port must be from 1 to"),
        ("temporal://[::1:7233", r"^executor: temporal://\*\*\*: an IPv6 host needs both"),
    ],
)
def test_bad_urls_are_usage_errors(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        TemporalURL.parse(url)
    assert "secret" not in str(info.value)


# -- the plan and the coordinator over its shadow --------------------------------------------------

RUNBOOK = """
from runbook import Approval, rollback, step


@step
def plan():
    return 1


@step(reversible=True, retries=2, backoff=0.5, queue="db")
def stage(plan):
    return 2


@rollback(stage)
def unstage(stage):
    pass


@step(approval=Approval(min=2, allow_self=False, approvers=["bob", "carol"]))
def switch(stage):
    return 3


@step(when=lambda plan: plan > 0)
def verify(switch, extra=None):
    return 4


@step(after=[verify], idempotent=True)
def report(plan):
    return 5
"""


def _runbook(tmp_path: Path, source: str = RUNBOOK):
    path = tmp_path / "rb.py"
    path.write_text(textwrap.dedent(source))
    return load(path)


def test_the_plan_carries_the_options_the_workflow_decides_by(tmp_path: Path) -> None:
    plan = plan_of(_runbook(tmp_path))
    specs = {s.name: s for s in plan.steps}
    assert list(specs) == ["plan", "stage", "switch", "verify", "report"]
    stage = specs["stage"]
    assert (stage.queue, stage.retries, stage.backoff, stage.reversible) == ("db", 2, 0.5, True)
    assert stage.rollback == [M.ArgSpec("stage", "step", "stage", False)]
    assert specs["switch"].approval == M.ApprovalSpec(2, False, ["bob", "carol"])
    assert specs["verify"].when == [M.ArgSpec("plan", "step", "plan", False)]
    assert M.ArgSpec("extra", "default", "extra", True) in specs["verify"].args
    assert specs["report"].after == ["verify"] and specs["report"].idempotent
    assert specs["plan"].queue is None and specs["plan"].wait == 0.0


def _drive(c: Coordinator, fail: str | None = None) -> list[tuple[str, str]]:
    """Feed a coordinator the same events; return what it decided, in order."""
    log = []
    c.start()
    while c.has_ready():
        for name in c.take_ready(8):
            reason = c.blocked_by(c.steps[name].args)
            if reason:
                c.on_skipped(name, reason)
                log.append(("skip", name))
            elif name == fail:
                c.on_failed(name)
                log.append(("fail", name))
            else:
                c.on_succeeded(name)
                log.append(("ok", name))
    while (name := c.next_rollback()) is not None:
        c.on_rolled_back(name)
        log.append(("undo", name))
    log.append(("status", c.status()))
    return log


@pytest.mark.parametrize("fail", [None, "switch", "verify"])
def test_the_shadow_dag_gets_the_same_decisions_as_the_runbook(
    tmp_path: Path, fail: str | None
) -> None:
    rb = _runbook(tmp_path)
    real = _drive(Coordinator(rb), fail)
    assert _drive(Coordinator(shadow(plan_of(rb))), fail) == real  # type: ignore[arg-type]
    if fail == "switch":
        assert ("undo", "stage") in real and real[-1] == ("status", "rolled_back")


def test_the_backoff_and_retry_decisions_are_the_runbooks(tmp_path: Path) -> None:
    rb = _runbook(tmp_path)
    real, copy = Coordinator(rb), Coordinator(shadow(plan_of(rb)))  # type: ignore[arg-type]
    for attempt in (1, 2, 3):
        assert copy.should_retry("stage", attempt) == real.should_retry("stage", attempt)
        assert copy.backoff("stage", attempt, 0.25) == real.backoff("stage", attempt, 0.25)
    assert not copy.should_retry("stage", 1, lease_lost=True)


def test_a_declared_wait_travels_in_the_plan(tmp_path: Path) -> None:
    rb = _runbook(
        tmp_path,
        """
        from runbook import step
        from runbook.strategies import blue_green

        release = blue_green("web", deploy=lambda color: None, health=lambda color: True, bake=90)
        """,
    )
    waits = {s.name: s.wait for s in plan_of(rb).steps}
    assert waits["release.bake"] == 90.0
    assert {n: w for n, w in waits.items() if n != "release.bake"} == dict.fromkeys(
        [n for n in waits if n != "release.bake"], 0.0
    )


# -- the banked clock ------------------------------------------------------------------------------


def test_the_banked_clock_serves_the_durable_wait_first() -> None:
    inner = FakeClock()
    clock = BankedClock(5.0, inner)
    start = inner.monotonic()
    clock.sleep(3)
    asyncio.run(clock.asleep(2))
    assert inner.monotonic() == start  # 5 s already waited by the workflow's timer
    clock.sleep(1.5)
    assert inner.monotonic() - start == pytest.approx(1.5)  # past the bank: real waiting


# -- starting: refused before anything is recorded -------------------------------------------------


def test_a_secret_param_given_on_the_command_line_is_refused(tmp_path: Path) -> None:
    rb = _runbook(
        tmp_path,
        """
        from runbook import param, step
        token = param("token", secret=True, env="DEPLOY_TOKEN")

        @step
        def go(params):
            return None
        """,
    )
    runner = Runner(actor="alice", params={"token": "s3cr3t"})
    with pytest.raises(UsageError, match="secret parameter\\(s\\) token cannot travel") as info:
        asyncio.run(TemporalRuns("temporal://127.0.0.1:1").start(runner, rb))
    assert "s3cr3t" not in str(info.value)
    assert runner.store is not None and runner.store.list_runs() == []


def test_an_unreachable_temporal_records_no_run(tmp_path: Path) -> None:
    rb = _runbook(tmp_path, "from runbook import step\n@step\ndef go():\n    return 1\n")
    runner = Runner(actor="alice")
    with pytest.raises(RunbookError, match=r"cannot reach Temporal at 127\.0\.0\.1:1"):
        asyncio.run(TemporalRuns("temporal://127.0.0.1:1").start(runner, rb))
    assert runner.store is not None and runner.store.list_runs() == []


def test_runbook_paths_travel_relative_to_the_project_root(tmp_path: Path) -> None:
    assert relative(tmp_path / "runbooks" / "x.py", tmp_path) == "runbooks/x.py"
    assert relative(Path("/elsewhere/x.py"), tmp_path) == "/elsewhere/x.py"


def test_an_expiry_recorded_once_is_not_recorded_again_by_a_retried_activity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``runbook.expire`` activity is retried when its worker dies; one that died after
    recording must not record ``approval_expired`` twice (the gate keeps what it recorded)."""
    from datetime import UTC, datetime, timedelta

    from runbook_temporal.bookkeeping import RunActivities
    from runbook_temporal.runtime import WorkerRuns

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "timed.py"
    path.write_text(
        "from runbook import Approval, step\n\n"
        '@step(approval=Approval(timeout="1h", on_timeout="fail"))\n'
        "def switch():\n    return 1\n"
    )
    store, audit = f"sqlite:///{tmp_path}/rb.db", [f"jsonl://{tmp_path}/audit.jsonl"]
    past = FakeClock(datetime.now(UTC) - timedelta(hours=2), freeze=False)
    with Runner(actor="alice", store=store, audit=audit, clock=past) as started:
        paused = started.run(path)
    assert paused.status == "paused"
    with Runner(actor="alice", store=store, audit=audit) as worker:
        acts = RunActivities(WorkerRuns(worker, tmp_path))
        assert worker.store is not None
        record = worker.store.get_run(paused.run_id)
        ref = M.RunRef(paused.run_id, "timed.py", record.runbook_sha256, record.env, "alice")
        job = M.GateCheck(ref, "switch", M.Policy(), {}, True)
        first, again = acts._expire(job), acts._expire(job)
        assert first == again and first.action == "fail" and "expired" in first.reason
        kinds = [e.kind for e in worker.sinks[0].events(AuditQuery(run_id=paused.run_id))]
    assert kinds.count("approval_expired") == 1


# -- following a run while its workflow changes workers ------------------------------------------


def _rpc(status: str, message: str = "boom") -> RPCError:
    return RPCError(message, RPCStatusCode[status], b"")


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        ("CANCELLED", "context canceled", True),
        ("DEADLINE_EXCEEDED", "deadline", True),
        ("UNAVAILABLE", "connection reset", True),
        ("UNKNOWN", "rpc error: context canceled", True),
        ("UNKNOWN", "something else", False),
        ("NOT_FOUND", "workflow not found", False),
        ("INVALID_ARGUMENT", "bad query", False),
    ],
)
def test_which_query_failures_are_a_worker_changing_hands(
    status: str, message: str, expected: bool
) -> None:
    from runbook_temporal.client import transient

    assert transient(_rpc(status, message)) is expected


class _Handle:
    """A workflow handle whose query fails with ``errors`` first, then answers."""

    def __init__(self, errors: list[RPCError]) -> None:
        self.errors = errors
        self.calls = 0

    async def query(self, name: str, result_type: object) -> M.Progress:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return M.Progress(status="running")


def _runs(monkeypatch: pytest.MonkeyPatch, handle: _Handle) -> TemporalRuns:
    runs = TemporalRuns(TemporalURL.parse("temporal://127.0.0.1:7233"))

    async def get(run_id: str) -> _Handle:
        return handle

    monkeypatch.setattr(runs, "handle", get)
    monkeypatch.setattr("runbook.backoff.delay", lambda *a, **k: 0.0)  # no real waiting
    return runs


def test_progress_rides_out_a_dead_workers_failed_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    handle = _Handle([_rpc("CANCELLED", "context canceled"), _rpc("DEADLINE_EXCEEDED")])
    state = asyncio.run(_runs(monkeypatch, handle).progress("r"))
    assert state.status == "running" and handle.calls == 3


def test_progress_raises_a_refused_query_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    handle = _Handle([_rpc("NOT_FOUND", "workflow not found")])
    with pytest.raises(RPCError, match="workflow not found"):
        asyncio.run(_runs(monkeypatch, handle).progress("r"))
    assert handle.calls == 1


def test_progress_gives_up_after_its_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    handle = _Handle([_rpc("CANCELLED", "context canceled")] * 5)
    with pytest.raises(RPCError, match="context canceled"):
        asyncio.run(_runs(monkeypatch, handle).progress("r", patience=0.0))
    assert handle.calls == 1
