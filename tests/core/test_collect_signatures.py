"""How collection reads a step's parameters: straight off a plain function's code object, and
through ``inspect.signature`` for anything else, with the same answer either way."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pytest

from runbook import DefinitionError, load
from runbook.collect import _parameters


def _by_inspect(func: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


def plain(a, b, c=3):  # type: ignore[no-untyped-def]
    pass


def keyword_only(a, *, b, c=None):  # type: ignore[no-untyped-def]
    pass


def everything(a, b=2, /, c=3, *rest, d, e=5, **more):  # type: ignore[no-untyped-def]
    pass


def star_only(*args, **kwargs):  # type: ignore[no-untyped-def]
    pass


def bare_star(*, only=1):  # type: ignore[no-untyped-def]
    pass


def with_locals(a, b=None):  # type: ignore[no-untyped-def]
    x = a  # locals after the parameters in co_varnames must not be read as parameters
    y = b
    return x, y


async def coroutine(a, *, b=1):  # type: ignore[no-untyped-def]
    pass


def generator(a):  # type: ignore[no-untyped-def]
    yield a


def closure_maker():  # type: ignore[no-untyped-def]
    value = 1

    def inner(a, b=value):  # type: ignore[no-untyped-def]
        return a + b

    return inner


@pytest.mark.parametrize(
    "func",
    [
        plain,
        keyword_only,
        everything,
        star_only,
        bare_star,
        with_locals,
        coroutine,
        generator,
        closure_maker(),
        lambda: None,
        lambda a, b=2: None,
    ],
    ids=lambda f: getattr(f, "__name__", "?"),
)
def test_a_plain_function_reads_as_inspect_signature_would(func):
    assert _parameters(func) == _by_inspect(func)


def test_a_wrapped_function_reads_as_the_function_it_wraps():
    def deco(f):  # type: ignore[no-untyped-def]
        @functools.wraps(f)
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            return f(*args, **kwargs)

        return wrapper

    wrapped = deco(plain)
    assert _parameters(wrapped) == _by_inspect(wrapped) == _by_inspect(plain)


def test_an_explicit_signature_wins_over_the_code_object():
    def f(*args, **kwargs):  # type: ignore[no-untyped-def]
        pass

    f.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("host", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    )
    assert _parameters(f) == [("host", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect._empty)]


@pytest.mark.parametrize(
    "func",
    [
        functools.partial(plain, 1),
        type("Callable", (), {"__call__": lambda self, a, b=1: None})(),
        functools.partialmethod(plain, 1).__get__(object()),
    ],
    ids=["partial", "callable-object", "partialmethod"],
)
def test_other_callables_go_through_inspect_signature(func):
    assert _parameters(func) == _by_inspect(func)


def test_a_callable_without_a_signature_is_still_a_definition_error(write_runbook):
    path = write_runbook(
        """
        from runbook import step

        class Opaque:
            __signature__ = "not a signature"  # inspect.signature raises TypeError

            def __call__(self):
                pass

        opaque = step(name="opaque")(Opaque())
        """
    )
    with pytest.raises(DefinitionError, match="step 'opaque': cannot read its signature"):
        load(path)


def test_defaults_and_keyword_only_parameters_are_injected_as_before(write_runbook):
    path = write_runbook(
        """
        from runbook import step

        @step
        def first():
            return 1

        @step
        def second(first, *, clock, retries=3, label="x"):
            return first
        """
    )
    rb = load(path)
    args = {a.name: (a.source, a.key, a.default) for a in rb.steps["second"].args}
    assert args == {
        "first": ("step", "first", inspect.Parameter.empty),
        "clock": ("name", "clock", inspect.Parameter.empty),
        "retries": ("default", "retries", 3),
        "label": ("default", "label", "x"),
    }
    assert rb.steps["second"].deps == ("first",)


@pytest.mark.parametrize(
    ("signature", "name"),
    [("a, /", "a"), ("*rest", "rest"), ("first, **more", "more")],
)
def test_parameters_injection_cannot_fill_are_refused_naming_them(write_runbook, signature, name):
    path = write_runbook(
        f"""
        from runbook import step

        @step
        def first():
            return 1

        @step
        def second({signature}):
            pass
        """
    )
    with pytest.raises(DefinitionError, match=f"parameter '{name}' must be a plain named"):
        load(path)
