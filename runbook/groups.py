"""Step groups: what a strategy returns, expanded by collection into ordinary named steps.

``release = canary("web", weights=[5, 50, 100], ...)`` at module level becomes the steps
``release.shift-5``, ``release.analyze-5``, ... with their rollbacks, so audit, locks, approvals,
output and ``graph`` treat them like any other step. Another step may depend on ``release``: that is
an edge to the group's last step, whose output it receives.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from runbook.markers import StepOptions


@dataclass(frozen=True)
class GroupStep:
    """One step of a group.

    ``name`` is local to the group (``shift-5``); ``after`` names other local steps of the group.
    ``func`` is injected by name like any step, and may ask for ``injector`` to call the user's
    callbacks (``uses``) with injection plus the strategy's extra names (``service``,
    ``weight``...).
    The data dependencies of ``uses`` (parameters named like steps) become edges of this step.
    """

    name: str
    func: Callable[..., Any]
    options: StepOptions = field(default_factory=StepOptions)
    rollback: Callable[..., Any] | None = None
    after: tuple[str, ...] = ()
    uses: tuple[Callable[..., Any], ...] = ()
    extra: tuple[str, ...] = ()
    # Parameter name -> local sibling step: the sibling's output, and a data edge (a sibling
    # that failed or was skipped skips this step unless the parameter has a default).
    inputs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StepGroup:
    """A strategy's expansion. ``after`` (external steps or names) applies to the group's roots."""

    strategy: str
    service: str
    steps: tuple[GroupStep, ...]
    after: tuple[Any, ...] = ()
    file: str | None = None
    line: int | None = None
    # Options given as param(...): ``bind(params)`` expands the group again with the run's values
    # (runbook.strategies.base.resolves_params); None when every option was a plain value.
    bind: Callable[[Any], StepGroup] | None = field(default=None, compare=False, repr=False)
    # Steps that depend on the run's hosts (``rolling(hosts="group:web")``) are made at
    # collection, when the inventory and ``--limit`` are known: ``expand(fleet)`` returns the
    # group with its steps.
    expand: Callable[[Any], StepGroup] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        made = _MADE.get()
        if made is not None:  # a runbook being imported (``made_while``)
            made.append((self.strategy, self.file, self.line))


# The groups made while a runbook module is imported: (strategy, file, line) of each.
_MADE: contextvars.ContextVar[list[tuple[str, str | None, int | None]] | None] = (
    contextvars.ContextVar("runbook_groups_made", default=None)
)


@contextlib.contextmanager
def made_while() -> Iterator[list[tuple[str, str | None, int | None]]]:
    """Record the groups made inside the block (a runbook's import)."""
    made: list[tuple[str, str | None, int | None]] = []
    token = _MADE.set(made)
    try:
        yield made
    finally:
        _MADE.reset(token)


def unassigned(
    made: Iterable[tuple[str, str | None, int | None]], file: str, found: Iterable[StepGroup]
) -> tuple[str, int | None] | None:
    """The first strategy call in ``file`` whose group no module-level name holds: a bare
    ``rolling(...)`` line makes no step at all, and the run would succeed having deployed
    nothing. Compared by line, not identity: a strategy may build its group in steps."""
    kept = {(group.file, group.line) for group in found}
    for strategy, where, line in made:
        if where == file and (where, line) not in kept:
            return strategy, line
    return None
