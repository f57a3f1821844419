"""Resources for one run: lazy, once per run, by name, torn down in reverse; the injector."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from runbook.errors import DefinitionError, RunbookError
from runbook.scope import Injector, ResourceScope


def test_factories_are_lazy_called_once_and_injected_by_name():
    made = []

    def db(env):
        made.append("db")
        return f"db-{env}"

    def cache(db):
        made.append("cache")
        return {"backend": db}

    scope = ResourceScope({"db": db, "cache": cache}, {"env": "prod"})
    assert made == []
    assert scope.get("cache") == {"backend": "db-prod"}
    assert scope.get("cache") is scope.get("cache")
    assert made == ["db", "cache"]
    assert "db" in scope and "env" in scope and "nope" not in scope


def test_unknown_resource_and_unknown_factory_parameter():
    scope = ResourceScope({"db": lambda password: password}, {})
    with pytest.raises(DefinitionError, match="no resource named 'x'"):
        scope.get("x")
    with pytest.raises(
        DefinitionError, match="resource 'db': parameter 'password' is not a resource or built-in"
    ):
        scope.get("db")


def test_factory_parameter_with_default_is_optional():
    scope = ResourceScope({"db": lambda url="sqlite://": url}, {})
    assert scope.get("db") == "sqlite://"


def test_resource_cycle_is_named():
    scope = ResourceScope({"a": lambda b: b, "b": lambda a: a}, {})
    with pytest.raises(DefinitionError, match="resource cycle: a -> b -> a"):
        scope.get("a")


def test_failing_factory_names_the_resource():
    def vault():
        raise ConnectionError("vault sealed")

    scope = ResourceScope({"vault": vault}, {})
    with pytest.raises(
        RunbookError, match="resource 'vault' failed to start: ConnectionError: vault sealed"
    ):
        scope.get("vault")


def test_generator_resources_torn_down_in_reverse_and_errors_returned():
    events = []

    def first():
        events.append("open first")
        yield 1
        events.append("close first")

    def second(first):
        events.append("open second")
        yield 2
        raise RuntimeError("flush failed")

    def twice():
        yield 1
        yield 2

    scope = ResourceScope({"first": first, "second": second, "twice": twice}, {})
    assert scope.get("second") == 2 and scope.get("twice") == 1
    errors = scope.close()
    assert events == ["open first", "open second", "close first"]
    assert errors == [
        "resource 'twice' yielded twice",
        "resource 'second' teardown failed: flush failed",
    ]
    assert scope.close() == []


def test_injector_resolves_extra_then_outputs_then_resources_then_defaults():
    scope = ResourceScope({"router": lambda: "router"}, {"env": "prod"})
    injector = Injector(
        {"stage": {"color": "green"}, "release.last": 100},
        scope,
        aliases={"release": "release.last"},
    )

    def callback(weight, stage, router, release, env, note="default"):
        return [weight, stage["color"], router, release, env, note]

    assert injector.call(callback, weight=5) == [5, "green", "router", 100, "prod", "default"]
    with pytest.raises(RunbookError, match="nothing to inject for 'missing'"):
        injector.call(lambda missing: None)


def test_injector_async_callbacks():
    scope = ResourceScope({}, {"env": "dev"})
    injector = Injector({}, scope)

    async def check(env, weight):
        return f"{env}:{weight}"

    assert asyncio.run(injector.acall(check, weight=2)) == "dev:2"
    assert asyncio.run(injector.acall(lambda env: env.upper())) == "DEV"


def test_injector_call_refuses_an_async_callback_without_calling_it():
    injector = Injector({}, ResourceScope({}, {"env": "dev"}))

    async def check(env):
        return env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RunbookError, match=r"is async: use `await injector\.acall"):
            injector.call(check)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
