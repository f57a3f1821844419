"""rolling(): batches, waves of max_unavailable, per-batch cleanup and reverse rollback."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runbook.errors import DefinitionError
from runbook.strategies import rolling

HOSTS = ["a", "b", "c", "d", "e"]


class Hosts:
    def __init__(self, fail_deploy=(), unhealthy=(), fail_undo=()) -> None:
        self.log: list[tuple[str, str, int]] = []
        self.fail_deploy = set(fail_deploy)
        self.unhealthy = set(unhealthy)
        self.fail_undo = set(fail_undo)
        self._lock = threading.Lock()

    def _note(self, what, host, batch):
        with self._lock:
            self.log.append((what, host, batch))

    def deploy(self, host, batch):
        self._note("deploy", host, batch)
        if host in self.fail_deploy:
            raise RuntimeError(f"apt failed on {host}")

    def health(self, host, batch):
        self._note("health", host, batch)
        return host not in self.unhealthy

    def undo(self, host, batch):
        self._note("undo", host, batch)
        if host in self.fail_undo:
            raise RuntimeError(f"{host} unreachable")

    def of(self, what):
        return [host for w, host, _ in self.log if w == what]


def make(hosts: Hosts, **kwargs):
    options = {
        "batch": 2,
        "deploy": hosts.deploy,
        "health": hosts.health,
        "rollback": hosts.undo,
        "health_timeout": 10,
    }
    options.update(kwargs)
    return rolling(HOSTS, **options)


def test_expansion_in_batches():
    group = make(Hosts(), service="web")
    assert [s.name for s in group.steps] == ["batch-1", "batch-2", "batch-3"]
    assert all(s.options.reversible and s.rollback for s in group.steps)
    assert group.steps[0].extra == ("service", "host", "batch")
    assert group.service == "web" and group.strategy == "rolling"
    bare = rolling(["x"], deploy=Hosts().deploy)
    assert [s.name for s in bare.steps] == ["batch-1"]
    assert not bare.steps[0].options.reversible and bare.steps[0].rollback is None


def test_success_one_host_at_a_time(run_group, resources):
    hosts = Hosts()
    result = run_group(make(hosts), resources)
    assert result.status == "succeeded"
    assert hosts.log == [
        ("deploy", "a", 1), ("health", "a", 1), ("deploy", "b", 1), ("health", "b", 1),
        ("deploy", "c", 2), ("health", "c", 2), ("deploy", "d", 2), ("health", "d", 2),
        ("deploy", "e", 3), ("health", "e", 3),
    ]  # fmt: skip
    assert result.outputs["batch-3"] == {"batch": 3, "hosts": ["e"]}


@pytest.mark.parametrize(
    ("stage", "hosts", "error"),
    [
        ("deploy", Hosts(fail_deploy={"d"}), "deploy deploy on d: RuntimeError: apt failed on d"),
        ("health", Hosts(unhealthy={"d"}), "health: d healthy: not true after 10s and "),
    ],
)
def test_failure_rolls_back_failed_batch_then_earlier_ones(
    run_group, resources, stage, hosts, error
):
    result = run_group(make(hosts), resources)
    assert result.statuses == {"batch-1": "rolled_back", "batch-2": "rolled_back"}
    assert result.order == ["batch-1", "batch-2", "undo:batch-2", "undo:batch-1"]
    assert error in result.errors["batch-2"]
    assert hosts.of("undo") == ["d", "c", "b", "a"]
    assert "e" not in hosts.of("deploy")


def test_a_failed_batch_is_rolled_back_whole(run_group, resources):
    hosts = Hosts(fail_deploy={"c"})
    run_group(make(hosts), resources)
    assert hosts.of("deploy") == ["a", "b", "c"]
    assert hosts.of("undo") == ["d", "c", "b", "a"]  # d was not reached: rollback= must cope


def test_without_rollback_a_failure_stops_where_it_is(run_group, resources):
    hosts = Hosts(fail_deploy={"c"})
    result = run_group(make(hosts, rollback=None), resources)
    assert result.statuses == {"batch-1": "succeeded", "batch-2": "failed"}
    assert hosts.of("undo") == []


def test_batch_rollback_tries_every_host_then_fails(run_group, resources):
    hosts = Hosts(fail_deploy={"e"}, fail_undo={"c"})
    result = run_group(make(hosts), resources)
    assert result.statuses == {
        "batch-1": "rolled_back", "batch-2": "rollback_failed", "batch-3": "rolled_back"
    }  # fmt: skip
    assert result.errors["batch-2"] == (
        "rollback of batch 2 failed for c: RuntimeError: c unreachable"
    )
    assert hosts.of("undo") == ["e", "d", "c", "b", "a"]


class Abort(BaseException):
    pass


def test_non_exception_escapes_untouched(run_group, resources):
    async def deploy(host):
        raise Abort

    with pytest.raises(Abort):
        run_group(rolling(["a"], deploy=deploy), resources)


def test_max_unavailable_bounds_concurrency(run_group, resources):
    state = {"now": 0, "peak": 0, "order": []}

    async def deploy(host):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0)
        state["order"].append(host)
        state["now"] -= 1

    run_group(rolling(HOSTS, batch=4, max_unavailable=2, deploy=deploy), resources)
    assert state["peak"] == 2
    assert sorted(state["order"][:2]) == ["a", "b"] and sorted(state["order"][2:4]) == ["c", "d"]
    state["peak"] = 0
    run_group(rolling(HOSTS, batch=2, max_unavailable=9, deploy=deploy), resources)
    assert state["peak"] == 2  # capped at the batch size


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ([], {}, "hosts must be a non-empty list of host names, got []"),
        ("web1", {}, "hosts must be a non-empty list"),
        (["a", "a", "b"], {}, "hosts appear more than once: ['a']"),
        (["a", ""], {}, "each host must be a non-empty string"),
        (["a"], {"batch": 0}, "batch= must be an integer >= 1, got 0"),
        (["a"], {"max_unavailable": 1.5}, "max_unavailable= must be an integer >= 1, got 1.5"),
        (["a"], {"deploy": None}, "deploy= must be a function, got None"),
        (["a"], {"rollback": 1}, "rollback= must be a function or None, got 1"),
        (["a"], {"health_timeout": -5}, "health_timeout= must be a number of seconds > 0"),
        (["a"], {"service": ""}, "service must be a non-empty string"),
    ],
)
def test_definition_errors(args, kwargs, message):
    options = {"deploy": Hosts().deploy, **kwargs}
    with pytest.raises(DefinitionError) as info:
        rolling(args, **options)
    assert message in str(info.value) and info.value.line is not None
