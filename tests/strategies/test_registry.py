"""Strategies come from plugins: the built-ins through the hook, others from any plugin."""

from __future__ import annotations

import asyncio

import pytest

from runbook.errors import DefinitionError, PluginError, StepFailed, StepTimeout
from runbook.groups import GroupStep, StepGroup
from runbook.hookspecs import StrategySpec, hookimpl
from runbook.plugins import Plugins
from runbook.strategies import blue_green, canary, get, rolling
from runbook.strategies.base import as_after, checked


class DarkLaunch:
    """What a pip-installed plugin would register."""

    @staticmethod
    def dark_launch(service: str) -> StepGroup:
        return StepGroup("dark_launch", service, (GroupStep("flip", lambda: None),))

    @hookimpl
    def runbook_strategies(self):
        return [StrategySpec("dark_launch", self.dark_launch, "feature-flag launch")]


def test_builtins_are_registered_through_the_hook():
    plugins = Plugins(entry_points=False)
    specs = plugins.strategies()
    assert {n: s.factory for n, s in specs.items() if n in {"canary", "blue_green", "rolling"}} == {
        "canary": canary, "blue_green": blue_green, "rolling": rolling
    }  # fmt: skip
    assert all(s.description for s in specs.values())
    assert get("canary") is canary


def test_plugin_strategy_is_found_by_name():
    plugins = Plugins([DarkLaunch()], entry_points=False)
    factory = get("dark_launch", plugins)
    assert factory("web").steps[0].name == "flip"


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(PluginError, match=r"no strategy named 'canery' \(known: .*canary"):
        get("canery", Plugins(entry_points=False))


def test_after_accepts_one_or_many():
    def stage():
        pass

    assert as_after(None) == ()
    assert as_after("stage") == ("stage",)
    assert as_after(stage) == (stage,)
    assert as_after([stage, "b"]) == (stage, "b")


@pytest.mark.parametrize("error", [StepTimeout("step 'x' timed out"), StepFailed("no")])
def test_checked_lets_timeouts_and_step_failures_through(error):
    async def boom():
        raise error

    with pytest.raises(type(error)) as info:
        asyncio.run(checked("analysis", boom()))
    assert info.value is error


@pytest.mark.parametrize(
    "make",
    [
        lambda when: canary("web", weights=[5, 100], bake=60, pause_at=[100], when=when),
        lambda when: blue_green("web", deploy=print, health=print, switch_approval=True, when=when),
        lambda when: rolling(["a", "b"], deploy=print, rollback=print, when=when),
    ],
    ids=["canary", "blue_green", "rolling"],
)
def test_when_applies_to_every_step_of_the_group(make):
    def is_prod(env):
        return env == "prod"

    assert all(s.options.when is is_prod for s in make(is_prod).steps)
    assert all(s.options.when is None for s in make(None).steps)
    with pytest.raises(DefinitionError, match="when= must be a function or None"):
        make("prod")
