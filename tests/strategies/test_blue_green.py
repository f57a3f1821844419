"""blue_green(): idle color from the router, health polling, switch and switch back."""

from __future__ import annotations

import asyncio

import pytest

from runbook.errors import DefinitionError
from runbook.markers import Approval
from runbook.strategies import blue_green


class Fleet:
    """Records what the callbacks were asked to do; health turns true after ``healthy_after``."""

    def __init__(self, healthy_after: int = 0, fail: str | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.polls = 0
        self.healthy_after = healthy_after
        self.fail = fail

    def _do(self, what: str, color: str) -> None:
        self.calls.append((what, color))
        if self.fail == what:
            raise RuntimeError(f"{what} of {color} exploded")

    def deploy(self, service, color):
        self._do("deploy", color)

    def undeploy(self, color):
        self._do("undeploy", color)

    def health(self, color):
        self.polls += 1
        return self.polls > self.healthy_after

    def scale_down(self, color):
        self._do("scale_down", color)


def make(fleet: Fleet, **kwargs):
    options = {
        "deploy": fleet.deploy,
        "health": fleet.health,
        "undeploy": fleet.undeploy,
        "scale_down": fleet.scale_down,
        "health_timeout": 60,
        "health_backoff": 1,
    }
    options.update(kwargs)
    return blue_green("web", **options)


@pytest.fixture
def router(router):
    router.set_weights("web", {"blue": 100})
    router.history.clear()
    return router


def test_expansion():
    group = make(Fleet(), switch_approval=True, bake=600)
    assert [s.name for s in group.steps] == [
        "deploy", "health", "approve-switch", "switch", "bake", "scale-down"
    ]  # fmt: skip
    steps = {s.name: s for s in group.steps}
    assert steps["deploy"].options.reversible and steps["deploy"].rollback
    assert steps["switch"].options.reversible and steps["switch"].rollback
    assert steps["approve-switch"].options.approval == Approval()
    assert steps["scale-down"].options.required is False
    assert steps["deploy"].extra == ("service", "color")
    minimal = blue_green("web", deploy=Fleet().deploy, health=Fleet().health)
    assert [s.name for s in minimal.steps] == ["deploy", "health", "switch"]
    assert not minimal.steps[0].options.reversible and minimal.steps[0].rollback is None


def test_success_deploys_idle_color_and_scales_down_old(run_group, resources, router, clock):
    fleet = Fleet(healthy_after=3)
    result = run_group(make(fleet, bake=120), resources)
    assert result.status == "succeeded"
    assert fleet.calls == [("deploy", "green"), ("scale_down", "blue")]
    assert fleet.polls == 4
    assert clock.sleeps[:3] == [pytest.approx(s, rel=0.5) for s in (1, 2, 4)]
    assert router.writes == [("switch", "web", "green")]
    assert router.peek("web") == {"blue": 0, "green": 100}
    assert result.outputs["switch"] == {"service": "web", "from": "blue", "to": "green"}
    assert result.outputs["deploy"] == {"service": "web", "color": "green", "live": "blue"}
    assert result.outputs["scale-down"] == {"service": "web", "color": "blue"}


def test_next_release_goes_back_to_blue(run_group, resources, router):
    router.switch("web", "green")
    fleet = Fleet()
    run_group(make(fleet), resources)
    assert fleet.calls == [("deploy", "blue"), ("scale_down", "green")]
    assert router.peek("web") == {"blue": 100, "green": 0}


def test_first_deploy_uses_first_color_and_has_nothing_to_scale_down(run_group, resources, router):
    fleet = Fleet()
    result = run_group(
        blue_green("api", deploy=fleet.deploy, health=fleet.health, scale_down=fleet.scale_down),
        resources,
    )
    assert fleet.calls == [("deploy", "blue")]
    assert router.peek("api") == {"blue": 100}
    assert result.outputs["scale-down"] == {"service": "api", "color": None}


@pytest.mark.parametrize(
    ("stage", "statuses", "calls", "error"),
    [
        ("deploy", {"deploy": "rolled_back"}, [("deploy", "green"), ("undeploy", "green")],
         "deploy deploy of web green: RuntimeError: deploy of green exploded"),
        ("health", {"deploy": "rolled_back", "health": "failed"},
         [("deploy", "green"), ("undeploy", "green")],
         "health: web green healthy: not true after 60s and "),
        ("switch", {"deploy": "rolled_back", "health": "succeeded", "switch": "rolled_back"},
         [("deploy", "green"), ("undeploy", "green")],
         "switching web to green failed: RuntimeError: router refused; traffic is back on blue"),
    ],
)  # fmt: skip
def test_failure_at_each_stage(run_group, resources, router, stage, statuses, calls, error):
    fleet = Fleet(healthy_after=10**6 if stage == "health" else 0, fail=stage)
    if stage == "switch":
        router.fail("switch", RuntimeError("router refused"))
    result = run_group(make(fleet), resources)
    assert result.statuses == statuses
    assert fleet.calls == calls
    assert error in result.errors[stage]
    if stage == "health":
        assert result.errors[stage].endswith("attempts (last result: False)")
    assert router.peek("web") == {"blue": 100}  # traffic never left blue


def test_switch_failure_restores_even_if_the_router_applied_it(run_group, resources, router):
    class Flaky(type(router)):
        def switch(self, service, to):
            super().switch(service, to)
            if to == "green":
                raise TimeoutError("no answer from the mesh API")

    flaky = Flaky({"web": {"blue": 100}})
    result = run_group(make(Fleet()), {**resources, "router": flaky})
    assert result.errors["switch"].endswith("traffic is back on blue")
    assert flaky.writes == [("switch", "web", "green"), ("switch", "web", "blue")]
    assert flaky.peek("web") == {"blue": 100, "green": 0}


def test_switch_failure_that_cannot_restore_says_so(run_group, resources, router):
    router.fail("switch", RuntimeError("router down"), times=2)
    result = run_group(make(Fleet()), resources)
    assert result.errors["switch"] == (
        "switching web to green failed: RuntimeError: router down; switching back to blue ALSO "
        "failed: RuntimeError: router down; check the router by hand"
    )


def test_first_deploy_switch_failure_has_nothing_to_restore(run_group, resources, router):
    router.fail("switch", RuntimeError("router down"))
    result = run_group(blue_green("api", deploy=Fleet().deploy, health=Fleet().health), resources)
    assert result.errors["switch"] == "switching api to blue failed: RuntimeError: router down"
    assert router.writes == [("switch", "api", "blue")]


def test_failure_after_switch_switches_back_to_kept_color(run_group, resources, router):
    group = make(Fleet())
    steps = {s.name: s for s in group.steps}
    ctx = resources["ctx"]
    run_group(group, resources)
    asyncio.run(
        steps["switch"].rollback(router=router, ctx=ctx, output={"from": "blue", "to": "green"})
    )
    assert router.writes[-1] == ("switch", "web", "blue")
    assert router.peek("web") == {"blue": 100, "green": 0}
    assert ctx.changes[-1] == ("router:web", {"blue": 0, "green": 100}, {"blue": 100, "green": 0})
    asyncio.run(steps["switch"].rollback(router=router, ctx=ctx, output={"from": None}))
    assert router.writes[-1] == ("switch", "web", "blue")  # first deploy: nothing to go back to


def test_failed_scale_down_does_not_roll_back_the_switch(run_group, resources, router):
    result = run_group(make(Fleet(fail="scale_down")), resources)
    assert result.statuses["switch"] == "succeeded"
    assert result.statuses["scale-down"] == "failed"
    assert router.peek("web") == {"blue": 0, "green": 100}


def test_unknown_live_color_fails_clearly(run_group, resources, router):
    router.set_weights("web", {"red": 100})
    result = run_group(make(Fleet()), resources)
    assert result.errors["deploy"] == "web is live on 'red', which is not one of ['blue', 'green']"


def test_async_callbacks_and_custom_colors(run_group, resources, router):
    seen = []

    async def deploy(color, service):
        seen.append(("deploy", service, color))

    async def health(color):
        return True

    router.set_weights("web", {"a": 100})
    run_group(blue_green("web", deploy=deploy, health=health, colors=("a", "b")), resources)
    assert seen == [("deploy", "web", "b")]
    assert router.peek("web") == {"a": 0, "b": 100}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deploy": None}, "deploy= must be a function, got None"),
        ({"health": 3}, "health= must be a function, got 3"),
        ({"colors": ("blue",)}, "colors= must be two names"),
        ({"colors": "bg"}, "colors= must be two names"),
        ({"colors": ("x", "x")}, "colors= must be two different names"),
        ({"colors": ("x", "")}, "colors[1] must be a non-empty string"),
        ({"health_timeout": 0}, "health_timeout= must be a number of seconds > 0, got 0"),
        ({"health_backoff": "1"}, "health_backoff= must be a number of seconds > 0"),
        ({"switch_approval": "bob"}, "switch_approval= must be a bool or Approval(...)"),
        ({"scale_down": "yes"}, "scale_down= must be a function or None"),
    ],
)
def test_definition_errors(kwargs, message):
    options = {"deploy": Fleet().deploy, "health": Fleet().health, **kwargs}
    with pytest.raises(DefinitionError) as info:
        blue_green("web", **options)
    assert message in str(info.value) and info.value.file == __file__
