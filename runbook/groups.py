"""Step groups: what a strategy returns, expanded by collection into ordinary named steps.

``release = canary("web", weights=[5, 50, 100], ...)`` at module level becomes the steps
``release.shift-5``, ``release.analyze-5``, ... with their rollbacks, so audit, locks, approvals,
output and ``graph`` treat them like any other step. Another step may depend on ``release``: that is
an edge to the group's last step, whose output it receives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runbook.made import record
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
        record(self.strategy, "", self.file, self.line)  # runbook.made: is it assigned?
