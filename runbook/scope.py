"""Resources for one run: created lazily on first use, torn down after the run, injected by name.

Priority, highest first: ``Runner(resources=...)`` overrides (a test's fakes), the runbook's own
``@resource`` functions, ``runbookconf.py`` resources (nearest folder first), plugin resources, then
the engine's built-ins.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any

from runbook.errors import DefinitionError, RunbookError
from runbook.values import discard


def bound_to_run(value: Any, ctx: Any) -> Any:
    """A resource given as an instance (``Runner(resources=...)``) as one run sees it.

    An instance outlives the runs it serves, so it cannot hold a run's params and outputs; one
    that needs them (a fake that must refuse what the real resource refuses) defines
    ``runbook_bind(ctx)``. Looked up on the type, so a ``Mock`` is never asked.
    """
    bind = getattr(type(value), "runbook_bind", None)
    return value.runbook_bind(ctx) if callable(bind) else value


class ResourceScope:
    def __init__(self, factories: Mapping[str, Callable[..., Any]], values: Mapping[str, Any]):
        self._factories = dict(factories)
        self._values: dict[str, Any] = dict(values)
        self._teardown: list[tuple[str, Any]] = []
        self._creating: list[str] = []
        self._lock = threading.RLock()

    def __contains__(self, name: str) -> bool:
        return name in self._values or name in self._factories

    def get(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            pass
        with self._lock:
            if name in self._values:
                return self._values[name]
            if name not in self._factories:
                raise DefinitionError(f"no resource named {name!r}")
            if name in self._creating:
                chain = " -> ".join([*self._creating[self._creating.index(name) :], name])
                raise DefinitionError(f"resource cycle: {chain}")
            self._creating.append(name)
            try:
                value = self._create(name, self._factories[name])
            finally:
                self._creating.pop()
            self._values[name] = value
            return value

    def _create(self, name: str, factory: Callable[..., Any]) -> Any:
        kwargs = {}
        for p in inspect.signature(factory).parameters.values():
            if p.name in self:
                kwargs[p.name] = self.get(p.name)
            elif p.default is p.empty:
                raise DefinitionError(
                    f"resource {name!r}: parameter {p.name!r} is not a resource or built-in"
                )
        try:
            value = factory(**kwargs)
        except RunbookError:
            raise
        except Exception as exc:
            raise RunbookError(
                f"resource {name!r} failed to start: {type(exc).__name__}: {exc}"
            ) from exc
        if inspect.isgenerator(value):
            gen = value
            value = next(gen)
            self._teardown.append((name, gen))
        elif inspect.isawaitable(value) or inspect.isasyncgen(value):
            discard(value)
            raise RunbookError(  # a factory that is not async def but returns a coroutine
                f"resource {name!r} returned {type(value).__name__}, not a value: a factory is "
                "a plain function or generator"
            )
        return value

    def release(self) -> None:
        """Forget every resource once the run is over (after ``close``): they refer back to the
        run (``ctx``) and to this scope (``injector``), cycles that only the cyclic collector
        would free otherwise. A generator not yet torn down keeps its place in ``close``."""
        with self._lock:
            self._values.clear()
            self._factories.clear()

    def close(self) -> list[str]:
        """Tear down generator resources in reverse order; return errors instead of raising."""
        errors = []
        while self._teardown:
            name, gen = self._teardown.pop()
            try:
                next(gen)
            except StopIteration:
                continue
            except Exception as exc:
                errors.append(f"resource {name!r} teardown failed: {exc}")
            else:
                errors.append(f"resource {name!r} yielded twice")
        return errors


class Injector:
    """The ``injector`` built-in: call a user callback with injection, for strategies and helpers.

    Names resolve as for steps: ``extra`` values first, then outputs of finished steps, then
    resources and built-ins, then the parameter's default.
    """

    def __init__(
        self,
        outputs: Mapping[str, Any],
        scope: ResourceScope,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._outputs = outputs
        self._scope = scope
        self._aliases = aliases or {}

    def kwargs(self, fn: Callable[..., Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for p in inspect.signature(fn).parameters.values():
            key = self._aliases.get(p.name, p.name)
            if p.name in extra:
                out[p.name] = extra[p.name]
            elif key in self._outputs:
                out[p.name] = self._outputs[key]
            elif p.name in self._scope:
                out[p.name] = self._scope.get(p.name)
            elif p.default is p.empty:
                raise RunbookError(
                    f"{getattr(fn, '__name__', fn)!r}: nothing to inject for {p.name!r}"
                )
        return out

    def call(self, fn: Callable[..., Any], /, **extra: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            raise RunbookError(
                f"{getattr(fn, '__name__', fn)!r} is async: use "
                "`await injector.acall(...)` from an async step"
            )
        result = fn(**self.kwargs(fn, extra))
        if inspect.isawaitable(result):
            raise RunbookError(
                f"{getattr(fn, '__name__', fn)!r} is async: use "
                "`await injector.acall(...)` from an async step"
            )
        return result

    async def acall(self, fn: Callable[..., Any], /, **extra: Any) -> Any:
        kwargs = self.kwargs(fn, extra)
        if inspect.iscoroutinefunction(fn):
            return await fn(**kwargs)
        result = await asyncio.to_thread(fn, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
