"""What a step may return: strict JSON, checked at the step boundary.

Outputs are stored, audited, passed to other steps and resumed from in another process, so they
must survive a JSON round trip unchanged. NaN and Infinity are not JSON (RFC 8259): Python writes
them, but most readers (and PostgreSQL's ``jsonb``) refuse them, so they are rejected here like
any other non-JSON value instead of failing later, far from the step that produced them.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

_PLAIN = frozenset({type(None), bool, int})


def output_problem(step: str, output: Any) -> TypeError | None:
    """Why ``output`` cannot be a step's output, as the error to fail the step with, or None."""
    if inspect.iscoroutine(output):  # a sync step returning an async call it did not await
        discard(output)
        return TypeError(
            f"step {step!r} returned a coroutine, not its result: make the step async def and "
            "await it, or call asyncio.run(...) in it"
        )
    problem = json_problem(output)
    if problem is None:
        return None
    if problem == NOT_UNICODE:
        return TypeError(
            f"step {step!r} returned text that is {NOT_UNICODE}: return os.fsencode(...).decode("
            "'utf-8', 'backslashreplace') or the bytes' hex instead"
        )
    if problem == NOT_FINITE:
        return TypeError(
            f"step {step!r} returned {NOT_FINITE}, which is not JSON: return None or a "
            "string for a missing or unbounded measurement"
        )
    return TypeError(
        f"step {step!r} returned {problem}, which is not JSON-serialisable: "
        "return dicts, lists, strings, numbers, booleans or None so the run can be stored and "
        "resumed"
    )


NOT_UNICODE = (
    "not valid Unicode (a lone surrogate, as os.fsdecode makes of bytes that are not UTF-8)"
)
NOT_FINITE = "NaN or Infinity"


def json_problem(value: Any) -> str | None:
    """What makes ``value`` not strict JSON, said for a message ("NaN or Infinity"), or None.

    Step outputs and parameters both pass here: both are stored, audited and read back in
    another process. Text must be valid Unicode: a lone surrogate (``os.fsdecode`` of a file
    name that is not UTF-8 makes one) has no UTF-8 form, so no trail or store could record it."""
    if type(value) in _PLAIN:
        return None
    if isinstance(value, float) and math.isfinite(value):
        return None
    try:
        if type(value) is str:
            value.encode()
        else:
            json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return NOT_UNICODE
    except ValueError as exc:
        if "Out of range float" in str(exc):
            return NOT_FINITE
        return _type_name(value)
    except (TypeError, RecursionError):
        return _type_name(value)
    return None


def is_word(value: Any) -> bool:
    """A name a command line can give: a non-empty string without whitespace."""
    return type(value) is str and (value.isidentifier() or value == "".join(value.split()) != "")


def is_async(func: Any) -> bool:
    """An ``async def`` (or async generator) function, under any decorators: called where
    runbook calls synchronously, it returns a coroutine, which is always true and never runs."""
    plain = inspect.unwrap(func)
    return inspect.iscoroutinefunction(plain) or inspect.isasyncgenfunction(plain)


def discard(value: Any) -> None:
    """Close a coroutine that will never be awaited (it is being refused), so Python adds no
    "coroutine was never awaited" warning to the error that says so."""
    if inspect.iscoroutine(value):
        value.close()


def is_seconds(value: Any) -> bool:
    """A number of seconds as an option takes it: an int or float, not a bool, not NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def when_verdict(step: str, value: Any) -> bool:
    """What a ``when=`` returned, as the decision to run the step. A truthy value runs it, as
    ``if`` would; an awaitable (a lambda calling an ``async def``) is a ``TypeError``, because
    it is always truthy and the step would run whatever it would have said. ``async def``
    itself is refused at collection."""
    if inspect.isawaitable(value):
        discard(value)
        raise TypeError(
            f"when= of step {step!r} returned an awaitable ({type(value).__name__}): it must "
            "return True or False itself"
        )
    return bool(value)


def _type_name(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def valid_text(text: str) -> str:
    """``text`` as every record can hold it: a lone surrogate (``os.fsdecode`` of bytes that are
    not UTF-8, quoted in an exception's message) has no UTF-8 form, so a trail or a store would
    refuse the event or row reporting a failure; it is written as its escape (``\\udcff``)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
