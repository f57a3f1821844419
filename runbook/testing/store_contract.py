"""The RunStore contract as plain checks, so every store (built in or a plugin) passes them.

Each check takes ``open_store``: a callable that opens a handle on one store that is empty when the
check starts; calling it again opens another handle on the *same* store, the way another process
would. Checks close the handles they open. Use them from pytest::

    from runbook.testing.store_contract import CHECKS

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_store_contract(check, tmp_path):
        check(lambda: MyStore(f"mystore://{tmp_path}/db"))  # a fresh store per test

Values compared here are the ones a store must give back unchanged: JSON-compatible outputs (dicts,
lists, strings, numbers, booleans, None) and timezone-aware UTC datetimes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from runbook.errors import RunNotFound
from runbook.store.base import (
    ApprovalRecord,
    AuditWitness,
    InterruptDecision,
    RunRecord,
    RunStore,
    StepRecord,
    save_steps,
)

StoreOpener = Callable[[], RunStore]

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def make_run(run_id: str = "run-1", **changes: object) -> RunRecord:
    """A run record with every field set to a non-default value."""
    run = RunRecord(
        run_id=run_id,
        runbook_path="runbooks/deploy.py",
        runbook_sha256="ab" * 32,
        env="prod",
        actor="alice@example.com",
        status="running",
        params={"version": "1.2.3", "replicas": 3, "registry_token": "***", "tags": ["a", "b"]},
        created_at=T0,
        host="ops-host-1",
        pid=4242,
        options={"max_parallel": 8, "dry_run": False},
        error=None,
    )
    return run.evolve(**changes) if changes else run


def make_step(run_id: str = "run-1", name: str = "stage", **changes: object) -> StepRecord:
    fields: dict[str, object] = {
        "run_id": run_id,
        "name": name,
        "status": "succeeded",
        "output": {"color": "green", "n": 2, "ok": True, "ratio": 0.5, "none": None, "l": [1]},
        "error": None,
        "attempts": 2,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=1, microseconds=500),
        "duration": 1.0005,
        "reason": None,
        "completed_seq": 1,
    }
    fields.update(changes)
    return StepRecord(**fields)  # type: ignore[arg-type]


@contextmanager
def opened(open_store: StoreOpener) -> Iterator[RunStore]:
    store = open_store()
    try:
        yield store
    finally:
        store.close()


def _raises(exc_type: type[BaseException], func: Callable[[], object]) -> BaseException:
    try:
        func()
    except exc_type as exc:
        return exc
    raise AssertionError(f"{func} did not raise {exc_type.__name__}")


# -- runs ----------------------------------------------------------------------------------------


def check_run_round_trip(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        run = make_run()
        store.create_run(run)
        got = store.get_run("run-1")
        assert isinstance(got, RunRecord)
        assert got.evolve(updated_at=None) == run, got
        assert got.updated_at is not None and got.updated_at.tzinfo is not None


def check_create_run_stamps_created_at(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        before = datetime.now(UTC) - timedelta(minutes=1)
        store.create_run(make_run(created_at=None))
        got = store.get_run("run-1")
        assert got.created_at is not None and got.created_at >= before
        assert got.updated_at is not None and got.updated_at >= before


def check_get_unknown_run(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        exc = _raises(RunNotFound, lambda: store.get_run("nope"))
        assert "nope" in str(exc)


def check_update_run(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        store.create_run(make_run())
        stamped = store.get_run("run-1").updated_at
        updated = store.update_run("run-1", status="failed", error="boom", pid=7)
        assert (updated.status, updated.error, updated.pid) == ("failed", "boom", 7)
        assert updated.updated_at is not None and stamped is not None
        assert updated.updated_at >= stamped
        got = store.get_run("run-1")
        assert got == updated
        assert got.params == make_run().params and got.created_at == T0
        _raises(RunNotFound, lambda: store.update_run("nope", status="failed"))
        _raises(TypeError, lambda: store.update_run("run-1", no_such_field=1))
        assert store.get_run("run-1") == updated


def check_list_runs(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        assert store.list_runs() == []
        statuses = ["succeeded", "failed", "paused", "succeeded", "paused"]
        for i, status in enumerate(statuses):
            store.create_run(make_run(f"r{i}", status=status, created_at=T0 + timedelta(hours=i)))
        assert [r.run_id for r in store.list_runs()] == ["r4", "r3", "r2", "r1", "r0"]
        assert [r.run_id for r in store.list_runs(status="paused")] == ["r4", "r2"]
        assert [r.run_id for r in store.list_runs(limit=2)] == ["r4", "r3"]
        assert [r.run_id for r in store.list_runs(status="succeeded", limit=1)] == ["r3"]
        assert store.list_runs(status="cancelled") == []
        assert all(isinstance(r, RunRecord) for r in store.list_runs())


def check_list_runs_default_limit(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        for i in range(25):
            store.create_run(make_run(f"r{i:02}", created_at=T0 + timedelta(minutes=i)))
        runs = store.list_runs()
        assert len(runs) == 20
        assert runs[0].run_id == "r24" and runs[-1].run_id == "r05"


# -- steps ---------------------------------------------------------------------------------------


def check_step_round_trip(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        store.create_run(make_run())
        assert store.get_steps("run-1") == {}
        outputs = [{"a": [1, 2, {"b": None}]}, [1, "x"], "text ✓", 42, 1.5, True, None]
        for i, output in enumerate(outputs):
            store.save_step(make_step(name=f"s{i}", output=output, completed_seq=i))
        steps = store.get_steps("run-1")
        assert set(steps) == {f"s{i}" for i in range(len(outputs))}
        for i, output in enumerate(outputs):
            assert steps[f"s{i}"] == make_step(name=f"s{i}", output=output, completed_seq=i)
            assert isinstance(steps[f"s{i}"], StepRecord)


def check_save_step_replaces(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        store.create_run(make_run())
        store.save_step(
            make_step(
                status="running", output=None, finished_at=None, duration=None, completed_seq=None
            )
        )
        failed = make_step(status="failed", output=None, error="AssertionError: no", reason="x")
        store.save_step(failed)
        assert store.get_steps("run-1") == {"stage": failed}


def check_save_steps(open_store: StoreOpener) -> None:
    """A transition's rows at once (``runbook.store.base.save_steps``: the store's batched
    ``save_steps`` where it has one): the same rows as saved one by one, replacing, in order."""
    with opened(open_store) as store:
        store.create_run(make_run())
        store.create_run(make_run("run-2"))
        store.save_step(make_step(name="a", status="running", output=None))
        batch = [
            make_step(name="a", output={"n": 1}),
            make_step(name="b", status="running", output=None, finished_at=None),
            make_step("run-2", "c", output=[1, "x"]),
        ]
        save_steps(store, batch)
        save_steps(store, [])
        assert store.get_steps("run-1") == {"a": batch[0], "b": batch[1]}
        assert list(store.get_steps("run-1")) == ["a", "b"]
        assert store.get_steps("run-2") == {"c": batch[2]}
        try:
            save_steps(store, [make_step("ghost", "x")])
        except RunNotFound:
            pass
        else:
            raise AssertionError("save_steps for an unknown run must raise RunNotFound")
        assert store.get_steps("ghost") == {}


def check_steps_are_per_run(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        store.create_run(make_run("a"))
        store.create_run(make_run("b"))
        store.save_step(make_step("a", "stage", output=1))
        store.save_step(make_step("b", "stage", output=2))
        assert store.get_steps("a")["stage"].output == 1
        assert store.get_steps("b")["stage"].output == 2
        assert store.get_steps("unknown") == {}


# -- approvals and interrupt decisions ------------------------------------------------------------


def check_approvals(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        store.create_run(make_run("a"))
        store.create_run(make_run("b"))
        given = [
            ApprovalRecord("a", "switch", "bob", "granted", "looks good", T0, False),
            ApprovalRecord("a", "migrate", "carol", "denied", "not today", T0, False),
            ApprovalRecord("b", "switch", "dev", "granted", "", T0, True),
            ApprovalRecord("a", "switch", "dave", "granted", "", T0 - timedelta(days=1), False),
            ApprovalRecord(
                "a",
                "switch",
                "erin",
                "granted",
                "",
                T0,
                data={"plan_hash": "ab" * 32, "signature": "-----BEGIN SSH SIGNATURE-----…"},
            ),
        ]
        for approval in given:
            store.add_approval(approval)
        assert store.approvals("a") == [given[0], given[1], given[3], given[4]]
        assert store.approvals("a", "switch") == [given[0], given[3], given[4]]
        assert store.approvals("a", "switch")[2].data["plan_hash"] == "ab" * 32
        assert store.approvals("a", step="migrate") == [given[1]]
        assert store.approvals("b") == [given[2]]
        assert store.approvals("b")[0].auto is True
        assert store.approvals("a", "nope") == [] and store.approvals("zzz") == []


def check_interrupt_decisions(open_store: StoreOpener) -> None:
    with opened(open_store) as store:
        store.create_run(make_run("a"))
        store.create_run(make_run("b"))
        first = InterruptDecision("a", "stage", "retry", "alice", T0)
        second = InterruptDecision("a", "switch", "skip", "bob", T0 + timedelta(seconds=1))
        other = InterruptDecision("b", "stage", "skip", "bob", T0)
        for decision in (first, other, second):
            store.add_interrupt_decision(decision)
        assert store.interrupt_decisions("a") == [first, second]
        assert store.interrupt_decisions("b") == [other]
        assert store.interrupt_decisions("zzz") == []


# -- sharing -------------------------------------------------------------------------------------


def check_handles_share_state(open_store: StoreOpener) -> None:
    """What one process writes, another (here: another handle) reads: the basis of resume."""
    with opened(open_store) as writer, opened(open_store) as reader:
        writer.create_run(make_run(status="paused"))
        writer.save_step(make_step(status="awaiting_approval", output=None))
        reader.add_approval(ApprovalRecord("run-1", "stage", "bob", "granted", "", T0))
        assert reader.get_run("run-1").status == "paused"
        assert reader.get_steps("run-1")["stage"].status == "awaiting_approval"
        assert [a.actor for a in writer.approvals("run-1")] == ["bob"]
        writer.update_run("run-1", status="succeeded")
        assert reader.list_runs(status="succeeded")[0].run_id == "run-1"


def check_threads(open_store: StoreOpener) -> None:
    """The engine calls one store from the event loop and from worker threads at once."""
    with opened(open_store) as store:
        store.create_run(make_run())
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(20):
                    store.save_step(make_step(name=f"w{worker}-{i}", output=i))
                    store.add_approval(ApprovalRecord("run-1", f"w{worker}", "bob", "granted"))
                    store.update_run("run-1", pid=worker)
                    store.get_steps("run-1")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(store.get_steps("run-1")) == 120
        assert len(store.approvals("run-1")) == 120
        for w in range(6):
            assert [a.step for a in store.approvals("run-1", f"w{w}")] == [f"w{w}"] * 20


def check_audit_witness(open_store: StoreOpener) -> None:
    """Each run's last audit ``(seq, hash)`` per chain: kept across handles, never moved back."""
    with opened(open_store) as writer, opened(open_store) as reader:
        assert reader.audit_witnesses() == []
        writer.witness_audit("run-1", "jsonl:///a", 3, "h3")
        writer.witness_audit("run-1", "jsonl:///a", 7, "h7")
        writer.witness_audit("run-1", "jsonl:///a", 5, "h5")  # a late, older write is ignored
        writer.witness_audit("run-2", "jsonl:///a", 4, "h4")  # no run row needed
        writer.witness_audit("run-1", "sqlite:///b", 2, "b2")
        assert reader.audit_witnesses("jsonl:///a") == [
            AuditWitness("run-2", "jsonl:///a", 4, "h4"),
            AuditWitness("run-1", "jsonl:///a", 7, "h7"),
        ]
        assert reader.audit_witnesses("sqlite:///b") == [
            AuditWitness("run-1", "sqlite:///b", 2, "b2")
        ]
        assert len(reader.audit_witnesses()) == 3
        assert reader.audit_witnesses("nowhere") == []
        one = getattr(reader, "audit_witness", None)  # optional: one run's, by its key
        if one is not None:
            assert one("run-1", "jsonl:///a") == AuditWitness("run-1", "jsonl:///a", 7, "h7")
            assert one("run-1", "sqlite:///b") == AuditWitness("run-1", "sqlite:///b", 2, "b2")
            assert one("run-2", "sqlite:///b") is None
            assert one("run-3", "jsonl:///a") is None


def check_close_is_idempotent(open_store: StoreOpener) -> None:
    store = open_store()
    store.close()
    store.close()


CHECKS: tuple[Callable[[StoreOpener], None], ...] = (
    check_run_round_trip,
    check_create_run_stamps_created_at,
    check_get_unknown_run,
    check_update_run,
    check_list_runs,
    check_list_runs_default_limit,
    check_step_round_trip,
    check_save_step_replaces,
    check_save_steps,
    check_steps_are_per_run,
    check_approvals,
    check_interrupt_decisions,
    check_handles_share_state,
    check_threads,
    check_audit_witness,
    check_close_is_idempotent,
)
