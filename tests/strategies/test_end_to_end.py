"""The three strategies run by the real engine: success, failure at each stage with the exact
rollback order, approval pause and resume across Runner objects, fake-clock bakes, dry-run and
definition errors found at load time."""

from __future__ import annotations

import os
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from runbook import load
from runbook.errors import DefinitionError

SW = "set_weights"

PRELUDE = """
from runbook import rollback, step
from runbook.strategies import blue_green, canary, rolling


@step(reversible=True)
def stage(shell):
    shell("deployctl stage web 2.0")
    return {"version": "2.0"}


@rollback(stage)
def unstage(shell):
    shell("deployctl unstage web 2.0")
"""

SOURCES = {
    "canary": """
def error_rate_ok(fleet, service, weight, stage):
    return fleet.check("analysis", f"{service}@{weight}")


release = canary("web", weights=[5, 50, 100], bake=600, analysis=error_rate_ok, after=[stage])
""",
    "blue_green": """
def deploy(fleet, color, stage):
    fleet.do("deploy", color)


def undeploy(fleet, color):
    fleet.do("undeploy", color)


def healthy(fleet, color):
    return fleet.check("health", color)


def scale_down(fleet, color):
    fleet.do("scale_down", color)


release = blue_green("web", deploy=deploy, undeploy=undeploy, health=healthy, bake=300,
                     scale_down=scale_down, health_timeout=120, after=[stage])
""",
    "rolling": """
def install(fleet, host, batch):
    fleet.do("deploy", host)


def healthy(fleet, host):
    return fleet.check("health", host)


def reinstall_previous(fleet, host):
    fleet.do("undo", host)


release = rolling(["web1", "web2", "web3", "web4"], batch=1, deploy=install, health=healthy,
                  rollback=reinstall_previous, health_timeout=120, after=[stage])
""",
}

VERIFY = """

@step
def verify(release, fleet):
    fleet.do("verify", str(release))
"""


class Fleet:
    """The infrastructure the callbacks act on; ``fail`` maps "action:target" to a failure."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.log: list[str] = []
        self._lock = threading.Lock()

    def do(self, action: str, target: str) -> None:
        with self._lock:
            self.log.append(f"{action}:{target}" if action != "verify" else action)
        if self.fail in (f"{action}:{target}", action):
            raise RuntimeError(f"{action} of {target} failed")

    def check(self, action: str, target: str) -> bool:
        with self._lock:
            if not self.log or self.log[-1] != f"{action}:{target}":
                self.log.append(f"{action}:{target}")
        return self.fail != f"{action}:{target}"


def write(tmp_path: Path, strategy: str, extra: str = VERIFY) -> Path:
    path = tmp_path / f"release_{strategy}.py"
    path.write_text(textwrap.dedent(PRELUDE + SOURCES[strategy] + extra))
    return path


def run(runbook_runner: Any, path: Path, fleet: Fleet, **runner: Any) -> Any:
    return runbook_runner.run(path, runner={"resources": {"fleet": fleet}, **runner})


def statuses(result: Any) -> dict[str, str]:
    return {name: step.status for name, step in result.steps.items()}


ALL_OK = {
    "canary": {
        "log": ["analysis:web@5", "analysis:web@50", "analysis:web@100", "verify"],
        "writes": [(SW, "web", {"canary": w, "stable": 100 - w}) for w in (5, 50, 100)],
        "weights": {"canary": 100, "stable": 0},
    },
    "blue_green": {
        "log": ["deploy:green", "health:green", "scale_down:blue", "verify"],
        "writes": [("switch", "web", "green")],
        "weights": {"blue": 0, "green": 100},
    },
    "rolling": {
        "log": ["deploy:web1", "health:web1", "deploy:web2", "health:web2", "deploy:web3",
                "health:web3", "deploy:web4", "health:web4", "verify"],
        "writes": [],
        "weights": {"blue": 100},
    },
}  # fmt: skip


@pytest.fixture
def fake_router(fake_router):
    fake_router.set_weights("web", {"blue": 100})
    fake_router.history.clear()
    return fake_router


@pytest.fixture(autouse=True)
def canary_starts_on_stable(request, fake_router):
    if "canary" in request.node.name:
        fake_router.set_weights("web", {"stable": 100})
        fake_router.history.clear()


@pytest.mark.parametrize("strategy", ["canary", "blue_green", "rolling"])
def test_success(runbook_runner, fake_router, tmp_path, strategy):
    fleet = Fleet()
    result = run(runbook_runner, write(tmp_path, strategy), fleet)
    assert result.status == "succeeded", result.error
    assert set(statuses(result).values()) == {"succeeded"}
    assert fleet.log == ALL_OK[strategy]["log"]
    assert fake_router.writes == ALL_OK[strategy]["writes"]
    assert fake_router.peek("web") == ALL_OK[strategy]["weights"]
    assert runbook_runner.shell.calls == ["deployctl stage web 2.0"]


FAILURES = [
    # canary: analysis fails at 50% -> abort to weight 0, newest shift first, then stage.
    ("canary", "analysis:web@50",
     {"release.shift-5": "rolled_back", "release.analyze-5": "succeeded",
      "release.shift-50": "rolled_back", "release.analyze-50": "failed",
      "release.shift-100": "pending", "verify": "pending", "stage": "rolled_back"},
     ["analysis:web@5", "analysis:web@50"],
     [(SW, "web", {"canary": 5, "stable": 95}), (SW, "web", {"canary": 50, "stable": 50}),
      (SW, "web", {"canary": 0, "stable": 100}), (SW, "web", {"canary": 0, "stable": 100})],
     {"canary": 0, "stable": 100}),
    # canary: the router fails on the second shift -> that shift is undone too.
    ("canary", "router:set_weights",
     {"release.shift-5": "rolled_back", "release.shift-50": "failed",
      "release.bake-50": "pending", "stage": "rolled_back"},
     ["analysis:web@5"],
     [(SW, "web", {"canary": 5, "stable": 95}), (SW, "web", {"canary": 50, "stable": 50}),
      (SW, "web", {"canary": 0, "stable": 100}), (SW, "web", {"canary": 0, "stable": 100})],
     {"canary": 0, "stable": 100}),
    # canary: a step after the group fails -> the whole canary is aborted.
    ("canary", "verify",
     {"release.shift-100": "rolled_back", "verify": "failed", "stage": "rolled_back"},
     ["analysis:web@5", "analysis:web@50", "analysis:web@100", "verify"],
     [(SW, "web", {"canary": w, "stable": 100 - w}) for w in (5, 50, 100)]
     + [(SW, "web", {"canary": 0, "stable": 100})] * 3,
     {"canary": 0, "stable": 100}),
    ("blue_green", "deploy:green",
     {"release.deploy": "failed", "release.health": "pending", "stage": "rolled_back"},
     ["deploy:green", "undeploy:green"], [], {"blue": 100}),
    ("blue_green", "health:green",
     {"release.deploy": "rolled_back", "release.health": "failed", "stage": "rolled_back"},
     ["deploy:green", "health:green", "undeploy:green"], [], {"blue": 100}),
    ("blue_green", "router:switch",
     {"release.health": "succeeded", "release.switch": "failed",
      "release.deploy": "rolled_back", "stage": "rolled_back"},
     ["deploy:green", "health:green", "undeploy:green"],
     [("switch", "web", "green"), ("switch", "web", "blue")], {"blue": 100}),
    ("blue_green", "verify",
     {"release.switch": "rolled_back", "release.deploy": "rolled_back",
      "release.scale-down": "succeeded", "verify": "failed"},
     ["deploy:green", "health:green", "scale_down:blue", "verify", "undeploy:green"],
     [("switch", "web", "green"), ("switch", "web", "blue")], {"blue": 100, "green": 0}),
    ("rolling", "deploy:web3",
     {"release.deploy[web1]": "rolled_back", "release.deploy[web2]": "rolled_back",
      "release.deploy[web3]": "failed", "release.batch-3": "failed",
      "release.deploy[web4]": "pending", "verify": "pending", "stage": "rolled_back"},
     ["deploy:web1", "health:web1", "deploy:web2", "health:web2", "deploy:web3",
      "undo:web2", "undo:web1"], [], {"blue": 100}),
    ("rolling", "health:web4",
     {"release.deploy[web4]": "rolled_back", "release.health[web4]": "failed",
      "release.batch-4": "failed", "release.deploy[web1]": "rolled_back", "stage": "rolled_back"},
     ["deploy:web1", "health:web1", "deploy:web2", "health:web2", "deploy:web3", "health:web3",
      "deploy:web4", "health:web4", "undo:web4", "undo:web3", "undo:web2", "undo:web1"],
     [], {"blue": 100}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "fail", "expected", "log", "writes", "weights"),
    FAILURES,
    ids=[f"{s}-{f}" for s, f, *_ in FAILURES],
)
def test_failure_rolls_back_in_order(
    runbook_runner, fake_router, tmp_path, strategy, fail, expected, log, writes, weights
):
    if fail.startswith("router:"):
        method = fail.split(":")[1]
        fake_router.fail(method, RuntimeError("router API down"), after=1 if method == SW else 0)
    fleet = Fleet(fail)
    result = run(runbook_runner, write(tmp_path, strategy), fleet)
    assert result.status == "rolled_back", statuses(result)
    got = statuses(result)
    assert {name: got[name] for name in expected} == expected
    # DESIGN 10: a failed step keeps "failed"; its own rollback's outcome is beside it.
    for name, status in expected.items():
        if status == "failed" and result.steps[name].rollback is not None:
            assert result.steps[name].rollback == "rolled_back"
    assert fleet.log == log
    assert fake_router.writes == writes
    assert fake_router.peek("web") == weights
    assert runbook_runner.shell.calls == ["deployctl stage web 2.0", "deployctl unstage web 2.0"]


def test_failure_messages_name_the_check(runbook_runner, tmp_path):
    result = run(runbook_runner, write(tmp_path, "canary"), Fleet("analysis:web@50"))
    assert "canary analysis error_rate_ok for web at 50%: returned False" in (
        result.steps["release.analyze-50"].error
    )


def test_approval_pause_and_resume_mid_canary(runbook_runner, fake_router, tmp_path):
    path = write(tmp_path, "canary", "")
    text = path.read_text().replace("after=[stage])", "after=[stage], pause_at=[50])")
    path.write_text(text)
    fleet = Fleet()
    first = runbook_runner.runner(actor="alice", resources={"fleet": fleet})
    paused = first.run(path)
    assert paused.status == "paused"
    assert paused.steps["release.approve-50"].status == "awaiting_approval"
    assert paused.steps["release.shift-50"].status == "pending"
    assert fake_router.peek("web") == {"canary": 5, "stable": 95}

    second = runbook_runner.runner(actor="bob", resources={"fleet": fleet})
    second.approve(paused.run_id, actor="bob", comment="5% looks clean")
    resumed = second.resume(paused.run_id)
    assert resumed.status == "succeeded"
    assert resumed.steps["release.approve-50"].status == "succeeded"
    assert fake_router.peek("web") == {"canary": 100, "stable": 0}
    assert fleet.log == ["analysis:web@5", "analysis:web@50", "analysis:web@100"]
    assert runbook_runner.shell.calls == ["deployctl stage web 2.0"]  # not re-run on resume
    approvals = second.store.approvals(paused.run_id)
    assert [(a.step, a.actor, a.decision, a.comment) for a in approvals] == [
        ("release.approve-50", "bob", "granted", "5% looks clean")
    ]


def test_five_weights_with_ten_minute_bakes_take_no_wall_time(
    runbook_runner, fake_router, fake_clock, tmp_path
):
    path = tmp_path / "long.py"
    path.write_text(
        "from runbook.strategies import canary\n"
        "release = canary('web', weights=[1, 5, 25, 50, 100], bake=600)\n"
    )
    started = os.times().elapsed  # freezegun fakes time.perf_counter, not os.times
    result = runbook_runner.run(path)
    wall = os.times().elapsed - started
    assert result.status == "succeeded"
    assert sum(fake_clock.sleeps) == pytest.approx(5 * 600)
    assert wall < 10  # a real bake would take 50 minutes; measured ~0.1 s
    assert [s for s in result.steps] == [
        f"release.{kind}-{w}" for w in (1, 5, 25, 50, 100) for kind in ("shift", "bake")
    ]


def test_dry_run_changes_nothing(runbook_runner, fake_router, tmp_path):
    fleet = Fleet()
    result = run(runbook_runner, write(tmp_path, "blue_green"), fleet, dry_run=True)
    assert result.status == "succeeded"
    assert fleet.log == [] and fake_router.writes == []


def test_group_is_listed_with_its_edges(tmp_path):
    rb = load(write(tmp_path, "canary"), extra_names=["fleet"])
    steps = rb.steps
    assert list(steps)[:4] == ["stage", "release.shift-5", "release.bake-5", "release.analyze-5"]
    assert steps["release.shift-5"].after == ("stage",)
    assert "stage" in steps["release.analyze-5"].deps  # error_rate_ok asks for stage's output
    assert steps["verify"].deps == ("release.analyze-100",)
    assert steps["release.shift-5"].rollback is not None


def test_definition_errors_point_at_the_runbook_line(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(
        "from runbook.strategies import canary\n\nrelease = canary('web', weights=[50, 5])\n"
    )
    with pytest.raises(DefinitionError) as info:
        load(path)
    assert info.value.file == str(path) and info.value.line == 3
    assert "canary(): weights= must be strictly increasing, got [50, 5]" in str(info.value)


def test_callback_names_are_checked_at_load(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(
        "from runbook.strategies import canary\n\n"
        "def error_rate_ok(weight, prometheus):\n    return True\n\n"
        "release = canary('web', weights=[100], analysis=error_rate_ok)\n"
    )
    with pytest.raises(DefinitionError, match="'prometheus' is not a step, resource or built-in"):
        load(path)
