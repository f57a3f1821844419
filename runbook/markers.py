"""The decorators a runbook is written with: ``@step``, ``@probe``, ``@rollback``, ``@resource``.

Each decorator returns the function unchanged and only attaches a frozen spec to it, so a step stays
a plain callable that a unit test can call directly. Collection (``runbook.collect``) reads
the specs.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar, Unpack, overload

from runbook.made import record
from runbook.values import is_async

F = TypeVar("F", bound=Callable[..., Any])

STEP_ATTR = "__runbook_step__"
ROLLBACK_ATTR = "__runbook_rollback__"
RESOURCE_ATTR = "__runbook_resource__"
# Seconds a step spends waiting on its clock and nothing else (a bake): a remote executor serves
# them as a durable timer before calling the function, whose clock waits then return at once.
WAIT_ATTR = "__runbook_wait__"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ON_TIMEOUT = ("deny", "fail")


def parse_duration(value: Any) -> float:
    """``"4h"``, ``"30m"``, ``"90s"``, ``"2d"``, ``"1h30m"`` or a number of seconds, > 0."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a duration such as '4h', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", text).strip():
            raise ValueError(f"expected a duration such as '4h', '30m' or '1h30m', got {value!r}")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be more than 0 seconds, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Approval:
    """Who must approve a gated step before it runs.

    ``min`` distinct approvers are needed; with ``allow_self=False`` the actor who started the run
    cannot be one of them; a non-empty ``approvers`` list is the only people allowed to approve
    (``group:NAME`` names a ``[tool.runbook.groups]`` entry). ``groups`` needs one approver from
    each listed group. ``timeout`` (``"4h"``) decides a gate nobody decided: ``on_timeout="deny"``
    denies it, ``"fail"`` fails the step (both recorded as ``approval_expired``).
    """

    min: int = 1
    allow_self: bool = True
    approvers: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    timeout: str | float | None = None
    on_timeout: str = "deny"
    # What the approver is asked, computed when the gate is reached: called with the gate step's
    # own inputs (injected by name), its text goes into ``approval_requested`` as ``reason``.
    reason: Callable[..., str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.min, bool) or not isinstance(self.min, int) or self.min < 1:
            raise ValueError(f"Approval(min=...) must be an integer >= 1, got {self.min!r}")
        if not isinstance(self.allow_self, bool):
            raise ValueError(
                f"Approval(allow_self=...) must be True or False, got {self.allow_self!r}"
            )
        for name in ("approvers", "groups"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, list | tuple | set | frozenset) or not all(
                isinstance(item, str) and item.strip() for item in value
            ):
                raise ValueError(f"Approval({name}=...) must be a list of names, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.reason is not None and not callable(self.reason):
            raise ValueError(f"Approval(reason=...) must be a function, got {self.reason!r}")
        if self.reason is not None and is_async(self.reason):
            raise ValueError(  # the approver would be shown "<coroutine object ...>"
                "Approval(reason=...) must be a plain function, not async def: its text is "
                "written when the gate is reached"
            )
        if self.timeout is not None:
            try:
                parse_duration(self.timeout)
            except ValueError as exc:
                raise ValueError(f"Approval(timeout=...): {exc}") from None
        if self.on_timeout not in ON_TIMEOUT:
            raise ValueError(
                f"Approval(on_timeout=...) must be one of {', '.join(ON_TIMEOUT)}, "
                f"got {self.on_timeout!r}"
            )

    @property
    def timeout_seconds(self) -> float | None:
        """``timeout`` in seconds (it may be written ``"4h"`` or ``"1h30m"``): the deadline."""
        return None if self.timeout is None else parse_duration(self.timeout)

    def rules(self) -> dict[str, Any]:
        """The rules as data: recorded with each decision, compared when it is used."""
        return {
            "min": self.min,
            "allow_self": self.allow_self,
            "approvers": list(self.approvers),
            "groups": list(self.groups),
            "timeout": self.timeout,
            "on_timeout": self.on_timeout,
        }


@dataclass(frozen=True)
class StepOptions:
    """Everything ``@step(...)`` accepts. Validation that needs the whole runbook is in collect."""

    kind: str = "step"  # "step" | "probe"
    name: str | None = None
    after: tuple[Any, ...] = ()
    when: Callable[..., Any] | None = None
    approval: Approval | None = None
    reversible: bool = False
    retries: int = 0
    backoff: float = 1.0
    backoff_max: float = 300.0
    timeout: float | None = None
    lock: str | None = None
    required: bool = True
    idempotent: bool = False
    tags: tuple[str, ...] = ()
    # The task queue of a remote executor that runs this step (temporal://); None: the default.
    queue: str | None = None
    # Where the decorator was applied, for error messages.
    file: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)


class StepKwargs(TypedDict, total=False):
    """The options of ``@step(...)`` and ``@probe(...)`` as type checkers see them, so a typo
    (``@step(retris=3)``) or a wrong type is reported in the editor, not only at load time."""

    name: str
    after: Any  # a step function, a step's name, a strategy group, or a list of them
    when: Callable[..., Any]
    approval: Approval | bool | None
    reversible: bool
    retries: int
    backoff: float
    backoff_max: float
    timeout: float | None
    lock: str | None
    required: bool
    idempotent: bool
    tags: str | Iterable[str]
    queue: str | None


def _normalize_approval(value: Any) -> Approval | None:
    if value is None or value is False:
        return None
    if value is True:
        return Approval()
    if isinstance(value, Approval):
        return value
    raise TypeError(f"approval must be a bool or Approval(...), got {value!r}")


def _where(func: Callable[..., Any]) -> tuple[str | None, int | None]:
    """File and first line (the first decorator's) of a function, cheaply: no source reading."""
    attrs = getattr(func, "__dict__", None)
    if attrs is not None and "__wrapped__" not in attrs:  # the common case: no unwrapping to do
        code = getattr(func, "__code__", None)
    else:
        code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None:
        return None, None
    return code.co_filename, code.co_firstlineno


# What ``@step(...)`` accepts as keywords (``approval`` is normalised first); ``kind``, ``file``
# and ``line`` are fields the decorator sets itself.
_OPTIONS = frozenset(StepOptions.__dataclass_fields__) - {"kind", "file", "line"}


def _make_options(kind: str, func: Callable[..., Any], kwargs: dict[str, Any]) -> StepOptions:
    file, line = _where(func)
    if not kwargs:  # bare ``@step``: most steps of a large runbook
        return StepOptions(kind=kind, file=file, line=line)
    if not _OPTIONS.issuperset(kwargs):
        bad = sorted(set(kwargs) - _OPTIONS)
        from runbook.errors import DefinitionError

        raise DefinitionError(f"@{kind}: unknown option(s) {', '.join(bad)}", file=file, line=line)
    after = kwargs.pop("after", ()) or ()
    if not isinstance(after, Iterable) or isinstance(after, str):
        after = (after,)
    tags = kwargs.pop("tags", ()) or ()
    if isinstance(tags, str):
        tags = (tags,)
    if not isinstance(tags, Iterable) or not all(isinstance(t, str) for t in tags):
        from runbook.errors import DefinitionError

        raise DefinitionError(
            f"@{kind}: tags= must be a name or a list of names, got {tags!r}", file=file, line=line
        )
    approval = kwargs.pop("approval", None)
    queue = kwargs.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue.strip()):
        from runbook.errors import DefinitionError

        raise DefinitionError(
            f"queue must be a non-empty task queue name, got {queue!r}", file=file, line=line
        )
    try:
        approval = _normalize_approval(approval)
    except TypeError as exc:
        from runbook.errors import DefinitionError

        raise DefinitionError(str(exc), file=file, line=line) from None
    return StepOptions(
        kind=kind,
        after=tuple(after),
        tags=tuple(tags),
        approval=approval,
        file=file,
        line=line,
        **kwargs,
    )


def _decorator(kind: str, func: Callable[..., Any] | None, kwargs: dict[str, Any]) -> Any:
    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(f):
            raise TypeError(f"@{kind} decorates a function, got {f!r}")
        options = _make_options(kind, f, dict(kwargs))
        setattr(f, STEP_ATTR, options)
        name = options.name or str(getattr(f, "__name__", "?"))
        record(kind, name, options.file, options.line)  # runbook.made: does a name hold it?
        return f

    return mark(func) if func is not None else mark


@overload
def step(func: F, /) -> F: ...
@overload
def step(func: None = None, /, **options: Unpack[StepKwargs]) -> Callable[[F], F]: ...
def step(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Mark a function as a step. Works bare (``@step``) and with options (``@step(retries=3)``):
    those of ``runbook.markers.StepKwargs``, typed, so a misspelled one is an error in the editor
    as well as at load time."""
    return _decorator("step", func, options)


@overload
def probe(func: F, /) -> F: ...
@overload
def probe(func: None = None, /, **options: Unpack[StepKwargs]) -> Callable[[F], F]: ...
def probe(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Mark a read-only step: probes run for real even in ``--dry-run``."""
    return _decorator("probe", func, options)


@dataclass(frozen=True)
class RollbackSpec:
    target: Any  # the step function or its name
    file: str | None = None
    line: int | None = None


def rollback(target: Any) -> Callable[[F], F]:
    """Declare ``func`` as the undo of ``target`` (a step function or its name).

    The rollback receives the step's output under the step's name, plus any resource.
    """
    if callable(target) and not hasattr(target, STEP_ATTR) and not isinstance(target, str):
        # ``@rollback`` used bare on a function: a mistake we can name precisely.
        file, line = _where(target)
        from runbook.errors import DefinitionError

        raise DefinitionError(
            "@rollback needs the step it undoes: @rollback(step)", file=file, line=line
        )

    def mark(f: F) -> F:
        file, line = _where(f)
        setattr(f, ROLLBACK_ATTR, RollbackSpec(target=target, file=file, line=line))
        return f

    return mark


@dataclass(frozen=True)
class ResourceSpec:
    name: str
    file: str | None = None
    line: int | None = None
    fake: Callable[..., Any] | None = None  # what tests use instead (``@resource(fake=...)``)


@overload
def resource(func: F, /) -> F: ...
@overload
def resource(
    func: None = None, /, *, name: str | None = None, fake: Callable[..., Any] | None = None
) -> Callable[[F], F]: ...
def resource(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    fake: Callable[..., Any] | None = None,
) -> Any:
    """Declare a resource factory, injected by name like a pytest fixture (one instance per run).

    The factory may ask for other resources and built-ins. A generator factory is torn down after
    the run (code after ``yield``), like a yield fixture. ``fake=`` names the factory that
    ``pytest --runbooks`` and ``runbook_runner`` use instead, injected the same way (it may ask for
    ``shell``, ``clock``, ``params``... which are fakes there): a runbook's own resource reaches
    real systems, so a test never runs it.
    """
    if fake is not None and not callable(fake):
        raise TypeError(f"@resource(fake=...) takes a factory function, got {fake!r}")

    def mark(f: F) -> F:
        file, line = _where(f)
        for factory in (f, fake):
            if factory is not None and is_async(factory):
                from runbook.errors import DefinitionError

                raise DefinitionError(  # a step would be handed the coroutine, not the value
                    f"resource {name or f.__name__!r}: a factory is a plain function or "
                    "generator, not async def (resources are made on any thread, when first "
                    "asked for)",
                    file=file,
                    line=line,
                )
        spec = ResourceSpec(name=name or f.__name__, file=file, line=line, fake=fake)
        setattr(f, RESOURCE_ATTR, spec)
        return f

    return mark(func) if func is not None else mark


def options_of(func: Any) -> StepOptions | None:
    return getattr(func, STEP_ATTR, None)
