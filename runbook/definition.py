"""What collection makes of a runbook: its steps, how each argument is found, its rollbacks and
resources, and the ``Runbook`` that holds them in order.

Frozen dataclasses: the engine, the plan, the CLI's views and executor plugins read these, and
nothing changes them after ``runbook.collect`` has checked them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from runbook import dag
from runbook.groups import StepGroup
from runbook.markers import StepOptions
from runbook.params import ParamSpec


@dataclass(frozen=True)
class Arg:
    """How one parameter of a step (or rollback, or ``when``) gets its value."""

    name: str
    source: str  # "step" (an output), "name" (resource/built-in), "default", "extra"
    key: str
    default: Any = inspect.Parameter.empty

    @property
    def has_default(self) -> bool:
        return self.default is not inspect.Parameter.empty


@dataclass(frozen=True)
class RollbackDef:
    func: Callable[..., Any]
    args: tuple[Arg, ...]
    is_async: bool
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class StepDef:
    name: str
    func: Callable[..., Any]
    options: StepOptions
    args: tuple[Arg, ...]
    deps: tuple[str, ...]  # data dependencies (step names)
    after: tuple[str, ...]  # ordering-only dependencies
    when_args: tuple[Arg, ...] | None = None
    rollback: RollbackDef | None = None
    is_async: bool = False
    group: str | None = None
    uses: tuple[Callable[..., Any], ...] = ()
    extra: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.options.kind

    @property
    def predecessors(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.deps, *self.after)))

    @property
    def reversible(self) -> bool:
        return self.options.reversible or self.rollback is not None

    @property
    def where(self) -> str:
        return f"{self.options.file}:{self.options.line}"


@dataclass(frozen=True)
class ResourceDef:
    name: str
    func: Callable[..., Any]
    origin: str  # file that defined it
    line: int | None = None


@dataclass
class Runbook:
    path: Path
    name: str
    doc: str
    sha256: str
    module: ModuleType
    steps: dict[str, StepDef]  # topological order
    params: dict[str, ParamSpec]
    resources: dict[str, ResourceDef]
    lock: str | None = None
    conftests: tuple[ModuleType, ...] = ()
    groups: dict[str, StepGroup] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    # What injection resolves besides steps (for re-binding): a ``runbook.injection.Names``
    # after ``load()``, which asks the plugins for their names only when it must.
    names: Set[str] = frozenset()
    fleet: Any = None  # runbook.fleet.Fleet: the hosts this runbook was collected for

    def levels(self) -> list[list[str]]:
        """The steps in waves whose members do not depend on each other: what may run in
        parallel, as ``runbook graph`` and the dry-run plan show it."""
        return dag.levels(list(self.steps), {n: s.predecessors for n, s in self.steps.items()})

    def dependents(self) -> dict[str, list[str]]:
        """For each step, the steps that wait for it: what a failure there leaves undone."""
        return dependents_of(self.steps)


def dependents_of(steps: Mapping[str, StepDef]) -> dict[str, list[str]]:
    """For each step of ``steps``, the steps that wait for it (``Runbook.dependents``; also a
    plan rebuilt elsewhere, as the Temporal workflow's)."""
    out: dict[str, list[str]] = {name: [] for name in steps}
    for name, step in steps.items():
        for pred in step.predecessors:
            out[pred].append(name)
    return out
