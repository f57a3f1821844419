"""@step, @probe, @rollback, @resource: plain callables, options validated where written."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from runbook import Approval, DefinitionError, probe, resource, rollback, step
from runbook.markers import options_of


def test_bare_step_returns_the_function_unchanged_and_callable():
    def deploy(version):
        return {"deployed": version}

    marked = step(deploy)
    assert marked is deploy
    assert deploy("1.2") == {"deployed": "1.2"}  # unit-testable by calling it
    opts = options_of(deploy)
    assert opts.kind == "step" and opts.retries == 0 and opts.required and not opts.reversible


def test_step_with_options_records_them_and_keeps_the_function():
    def stage(plan):
        return plan

    marked = step(
        retries=3,
        backoff=0.5,
        timeout=30,
        reversible=True,
        tags="deploy",
        after="plan",
        lock="web-{env}",
        idempotent=True,
        required=False,
    )(stage)
    assert marked is stage and stage({"a": 1}) == {"a": 1}
    opts = options_of(stage)
    assert (opts.retries, opts.backoff, opts.timeout) == (3, 0.5, 30)
    assert opts.reversible and opts.idempotent and not opts.required
    assert opts.tags == ("deploy",) and opts.after == ("plan",) and opts.lock == "web-{env}"


def test_async_step_stays_a_coroutine_function():
    @step(timeout=5)
    async def fetch():
        return 42

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch()) == 42


def test_probe_is_marked_as_probe():
    @probe
    def live_color():
        return "blue"

    assert live_color() == "blue"
    assert options_of(live_color).kind == "probe"


def test_unknown_option_is_a_definition_error_with_file_and_line():
    with pytest.raises(DefinitionError) as info:

        @step(retry=3)  # typo of retries
        def deploy():
            pass

    err = info.value
    assert "unknown option(s) retry" in str(err)
    assert err.file == __file__
    assert err.line is not None and f"{__file__}:{err.line}" in str(err)


@pytest.mark.parametrize("reserved", ["kind", "file", "line"])
def test_internal_fields_are_not_options(reserved):
    with pytest.raises(DefinitionError, match=reserved):
        step(**{reserved: "x"})(lambda: None)


def test_approval_forms():
    assert options_of(step(approval=True)(lambda: None)).approval == Approval()
    assert options_of(step(approval=False)(lambda: None)).approval is None
    gate = Approval(min=2, allow_self=False, approvers=["alice", "bob"])
    assert options_of(step(approval=gate)(lambda: None)).approval.approvers == ("alice", "bob")


def test_approval_of_a_wrong_type_is_a_definition_error():
    with pytest.raises(DefinitionError, match="approval must be a bool or Approval"):
        step(approval="yes")(lambda: None)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_approval_min_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="min"):
        Approval(min=bad)


def test_rollback_used_bare_is_a_definition_error():
    with pytest.raises(DefinitionError, match=r"@rollback needs the step it undoes"):

        @rollback
        def undo():
            pass


def test_rollback_accepts_step_or_name_and_keeps_the_function():
    @step(reversible=True)
    def stage():
        return {}

    def unstage(stage):
        return "undone"

    assert rollback(stage)(unstage) is unstage and unstage({}) == "undone"
    assert rollback("stage")(unstage) is unstage


def test_resource_bare_and_named():
    @resource
    def db():
        return "conn"

    @resource(name="cache")
    def make_cache():
        return {}

    assert db() == "conn" and make_cache() == {}
    assert db.__runbook_resource__.name == "db"
    assert make_cache.__runbook_resource__.name == "cache"


def test_queue_names_the_task_queue_and_defaults_to_none():
    @step(queue="db")
    def migrate():
        return None

    @step
    def plain():
        return None

    assert options_of(migrate).queue == "db"
    assert options_of(plain).queue is None


@pytest.mark.parametrize("bad", ["", "  ", 3])
def test_queue_must_be_a_non_empty_name(bad):
    with pytest.raises(DefinitionError, match="queue must be a non-empty task queue name"):

        @step(queue=bad)
        def migrate():
            return None


def test_where_a_step_is_written_is_the_wrapped_function_for_a_decorated_one():
    import functools

    def inner(a):
        return a

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        return inner(*args, **kwargs)

    bare, with_options = step(wrapper), step(retries=1)(inner)
    assert (options_of(bare).file, options_of(bare).line) == (
        inner.__code__.co_filename,
        inner.__code__.co_firstlineno,
    )
    assert options_of(with_options).line == inner.__code__.co_firstlineno
    assert options_of(with_options).retries == 1


def test_a_callable_object_has_no_place_but_is_still_a_step():
    class Check:
        def __call__(self):
            return True

    check = step(name="check")(Check())
    assert (options_of(check).file, options_of(check).line) == (None, None)
