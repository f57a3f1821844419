"""What a runbook's import made, so collection can tell what no module-level name holds.

Collection finds steps and strategy groups among the module's names, as pytest finds tests. A
``@step`` inside a class or a function, a function redefined under the same name, or a bare
``rolling(...)`` line is made but never found: the run would succeed without it, having done
nothing. The decorators and ``StepGroup`` record each thing they make here while a runbook is
imported (``made_while``), and ``runbook.collect`` refuses what it did not find (``lost``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import NamedTuple


class Made(NamedTuple):
    what: str  # "step", "probe", or the strategy's name
    name: str  # the step's function name; "" for a group
    file: str | None
    line: int | None


# What is recorded: Made's fields as a plain tuple, which every decorator of a 1,000-step
# runbook builds; a ``Made`` is built only for the one ``lost`` returns.
Fields = tuple[str, str, str | None, int | None]
_MADE: contextvars.ContextVar[list[Fields] | None] = contextvars.ContextVar(
    "runbook_made", default=None
)


def record(what: str, name: str, file: str | None, line: int | None) -> None:
    made = _MADE.get()
    if made is not None:
        made.append((what, name, file, line))


@contextlib.contextmanager
def made_while() -> Iterator[list[Fields]]:
    """Record what is made inside the block (a runbook's import); read once it is done."""
    made: list[Fields] = []
    token = _MADE.set(made)
    try:
        yield made
    finally:
        _MADE.reset(token)


Place = tuple[str | None, int | None]
Named = tuple[str, str | None, int | None]  # a step's name and where it was made


def lost(
    made: Iterable[Fields], file: str, steps: Iterable[Named], groups: Iterable[Place]
) -> Made | None:
    """The first thing made in ``file`` that collection will not find, by name and place.

    Steps are counted: a factory makes every step at one line, and a loop that decorates one
    function per region, holding only the last under its name, loses the others; each step
    made needs one held with its name where it was made. Groups need only one held per place,
    since a strategy may build its group in steps (a copy with its ``bind``)."""
    held_steps = Counter(steps)
    held_groups = set(groups)
    seen: Counter[Named] = Counter()
    for what, name, where, line in made:
        if where != file:
            continue
        if what in ("step", "probe"):
            key = (name, where, line)
            seen[key] += 1
            if seen[key] > held_steps[key]:
                return Made(what, name, where, line)
        elif (where, line) not in held_groups:
            return Made(what, name, where, line)
    return None


def lost_message(thing: Made) -> str:
    if thing.name:
        return (
            f"{thing.what} {thing.name!r} is not held by a module-level name (defined inside a "
            "class or a function, redefined below under the same name, or one of several made in "
            "a loop under one name), so it would never run"
        )
    return (
        f"{thing.what}() makes its steps only when assigned to a module-level name "
        f"(release = {thing.what}(...)); as it is, nothing would run"
    )
