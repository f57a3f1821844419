"""What the three built-in strategies share: argument checks, callback calls, bake and gate steps.

Group step functions are ``async def``: a bake or a health poll then waits on the clock without
holding a worker thread. User callbacks go through ``injector.acall``, which awaits async ones and
runs sync ones in a worker thread. Router calls are made directly on the event loop: they are short,
and a cancellation must never fall between sending a switch and knowing whether it happened.

Steps keep no state in closures between them: each one reads what it needs from the router (the
source of truth, which is also what a run resumed in another process sees) or from its own
output, which the engine hands to its rollback as ``output``. The engine also rolls back a step
that failed or was interrupted, with ``output=None``: every rollback here handles that case.
"""

from __future__ import annotations

import contextvars
import functools
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from runbook.errors import DefinitionError, ParamError, StepFailed, StepTimeout
from runbook.groups import GroupStep
from runbook.markers import WAIT_ATTR, Approval, StepOptions
from runbook.params import REQUIRED, ParamSpec
from runbook.probes import Outcome, ProbeResult

F = TypeVar("F", bound=Callable[..., Any])

_HERE = __name__.rsplit(".", 1)[0]


# Set while a strategy is re-expanded at run start, so its errors point at the runbook line.
_LOCATION: contextvars.ContextVar[tuple[str | None, int | None] | None] = contextvars.ContextVar(
    "runbook_strategy_location", default=None
)


def caller() -> tuple[str | None, int | None]:
    """File and line of the runbook line that called the strategy, for definition errors."""
    pinned = _LOCATION.get()
    if pinned is not None:
        return pinned
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_HERE):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:  # pragma: no cover - always called from somewhere outside
        return None, None
    return frame.f_code.co_filename, frame.f_lineno


class Definition:
    """Collects a strategy's location once, so every check can raise a located error."""

    def __init__(self, strategy: str) -> None:
        self.strategy = strategy
        self.file, self.line = caller()
        self.when: Callable[..., Any] | None = None

    def condition(self, when: Any) -> None:
        """``when=`` of the whole group: put on every step, so the group runs or skips as one
        (for example a canary only in prod). Each step evaluates it just before it runs."""
        self.when = self.callback(when, "when", required=False)

    def error(self, message: str) -> DefinitionError:
        return DefinitionError(f"{self.strategy}(): {message}", file=self.file, line=self.line)

    def name(self, value: Any, what: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{what} must be a non-empty string, got {value!r}")
        return value

    def callback(self, value: Any, what: str, *, required: bool) -> Callable[..., Any] | None:
        if value is None and not required:
            return None
        if not callable(value):
            need = "a function" if required else "a function or None"
            raise self.error(f"{what}= must be {need}, got {value!r}")
        return value

    def seconds(self, value: Any, what: str, *, positive: bool = False) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise self.error(f"{what}= must be a number of seconds {bound}, got {value!r}")
        return float(value)

    def count(self, value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(f"{what}= must be an integer >= 1, got {value!r}")
        return value

    def options(self, **kwargs: Any) -> StepOptions:
        """Step options that point at the strategy's call site in error messages."""
        return StepOptions(kind="step", when=self.when, file=self.file, line=self.line, **kwargs)

    def approval(self, value: Any, what: str) -> Approval | None:
        if value is None or value is False:
            return None
        if value is True:
            return Approval()
        if isinstance(value, Approval):
            return value
        raise self.error(f"{what}= must be a bool or Approval(...), got {value!r}")


def as_after(value: Any) -> tuple[Any, ...]:
    """``after=`` accepts one step (function or name) or a list of them, like ``@step``."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


def label(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", None) or repr(func)


def named(func: Callable[..., Any], name: str, doc: str) -> Callable[..., Any]:
    """Give a generated step function a readable name and docstring (tracebacks, ``list``)."""
    func.__name__ = func.__qualname__ = name.replace("-", "_")
    func.__doc__ = doc
    return func


def verdict(result: Any, what: str) -> None:
    """Fail unless ``result`` passes: ``False`` or a non-healthy probe result fails; ``None``
    passes, so an assert-style check (raise on failure, return nothing) works."""
    if isinstance(result, ProbeResult):
        if not result.healthy:
            raise StepFailed(f"{what}: {result.outcome}: {result.detail}")
    elif isinstance(result, Outcome):
        if result is not Outcome.HEALTHY:
            raise StepFailed(f"{what}: {result}")
    elif result is False:
        raise StepFailed(f"{what}: returned False")


async def checked(what: str, awaitable: Any) -> Any:
    """Await a user callback; turn what it raised into a ``StepFailed`` that says which check.

    Step timeouts pass through unchanged: the engine reports those itself.
    """
    try:
        return await awaitable
    except (StepTimeout, StepFailed):
        raise
    except Exception as exc:
        raise StepFailed(f"{what}: {type(exc).__name__}: {exc}") from exc


def bake_step(service: str, seconds: float, doc: str, name: str) -> Callable[..., Any]:
    """A clock-driven wait that reports progress at least every 10% of the bake (and every
    minute of a long one), so the terminal shows it is alive and a fake clock skips it."""
    chunks = max(10, math.ceil(seconds / 60))

    async def bake(clock: Any, ctx: Any) -> dict[str, Any]:
        ctx.progress(f"baking {service}: 0s of {seconds:g}s", 0.0)
        done = 0.0
        for i in range(1, chunks + 1):
            target = seconds * i / chunks
            await clock.asleep(target - done)
            done = target
            ctx.progress(f"baking {service}: {done:g}s of {seconds:g}s", i / chunks)
        return {"service": service, "baked": seconds}

    setattr(bake, WAIT_ATTR, seconds)
    return named(bake, name, doc)


def gate_step(name: str, approval: Approval, doc: str, where: Definition) -> GroupStep:
    """A no-op step whose only job is its approval: the run pauses before it."""

    async def gate() -> None:
        return None

    return GroupStep(name, named(gate, name, doc), where.options(approval=approval))


def chain(steps: list[GroupStep]) -> tuple[GroupStep, ...]:
    """Order steps one after the other (each ``after`` its predecessor)."""
    return tuple(
        replace(step, after=(steps[index - 1].name,) if index else ())
        for index, step in enumerate(steps)
    )


# -- options given as param(...) ------------------------------------------------------------------


def _params_in(value: Any) -> list[ParamSpec]:
    if isinstance(value, ParamSpec):
        return [value]
    if callable(getattr(value, "params_used", None)):
        return list(value.params_used())
    return []


def placeholder(spec: ParamSpec, where: tuple[str | None, int | None], strategy: str) -> Any:
    """The value a param stands for before the run starts (``list``, ``graph``): its default,
    else its ``example``. Without either the steps cannot be shown, which is a definition error."""
    if spec.default is not REQUIRED:
        return spec.default
    if spec.example is not REQUIRED:
        return spec.example
    raise DefinitionError(
        f"{strategy}(): option param {spec.name!r} needs a default or an example= so that the "
        "steps can be listed before the run starts",
        file=where[0],
        line=where[1],
    )


def _coerce(spec: ParamSpec, value: Any) -> Any:
    """``-p weights=5,50,100`` arrives as strings: convert list items to the type of the
    default's items (ints for weights), so an option reads the same from -p as from Python."""
    model = spec.default if spec.default is not REQUIRED else spec.example
    if isinstance(value, list | tuple) and isinstance(model, list | tuple) and model:
        kind = type(model[0])
        if kind in (int, float) and any(isinstance(v, str) for v in value):
            try:
                return [kind(v) for v in value]
            except ValueError:
                raise ParamError(
                    [f"parameter {spec.name!r}: expected a list of {kind.__name__}, got {value!r}"]
                ) from None
    return value


def resolve(value: Any, params: Mapping[str, Any] | None, where: Any, strategy: str) -> Any:
    """One option's value: a param's run value (or placeholder when ``params`` is None), an
    object that holds params (``analysis.prometheus(...)``) bound the same way, else as is."""
    if isinstance(value, ParamSpec):
        if params is None:
            return placeholder(value, where, strategy)
        return _coerce(value, params[value.name])
    if callable(getattr(value, "params_used", None)):
        return value.bind(params) if params is not None else value.bind(None)
    return value


def resolves_params(factory: F) -> F:
    """Let a strategy's options be ``param(...)`` objects, resolved when the run starts.

    Called with params among its arguments, the strategy expands once with their defaults (what
    ``list`` and ``graph`` show) and returns a group whose ``bind(params)`` expands it again with
    the run's values: collection calls it as the run starts (and on resume, with the run's stored
    values), so ``-p weights=10,100`` really runs ``shift-10``, ``shift-100``. A bad value is a
    usage error naming the parameter.
    """
    strategy = factory.__name__

    @functools.wraps(factory)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        used = [p for v in (*args, *kwargs.values()) for p in _params_in(v)]
        if not used:
            return factory(*args, **kwargs)
        where = caller()

        def expand(params: Mapping[str, Any] | None) -> Any:
            token = _LOCATION.set(where)
            try:
                return factory(
                    *(resolve(v, params, where, strategy) for v in args),
                    **{k: resolve(v, params, where, strategy) for k, v in kwargs.items()},
                )
            finally:
                _LOCATION.reset(token)

        def bind(params: Mapping[str, Any]) -> Any:
            try:
                return expand(params)
            except DefinitionError as exc:
                names = ", ".join(sorted({repr(p.name) for p in used}))
                raise ParamError([f"parameter {names}: {exc.message}"]) from None

        return replace(expand(None), bind=bind)

    return wrapper  # type: ignore[return-value]
