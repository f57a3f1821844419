"""How a parameter gets its value: read a function's parameters and resolve each name, in DESIGN
order, to a step's output, a resource or built-in, or its default.

A name that resolves to nothing (and has no default) is a ``DefinitionError`` with the closest
real name. The names besides steps are a ``Names``: the plugins are asked for theirs only when a
name is none of the others, so collecting a runbook imports no plugin it does not use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from inspect import CO_VARARGS, CO_VARKEYWORDS
from types import FunctionType
from typing import Any

from runbook.definition import Arg
from runbook.errors import DefinitionError
from runbook.markers import STEP_ATTR

# Provided by the engine for every run; plugins add their own resource names on top.
BUILTINS = frozenset(
    {
        "ctx",
        "params",
        "env",
        "shell",
        "http",
        "clock",
        "log",
        "notify",
        "router",
        "injector",
        "hosts",
    }
)


class Names(Set[str]):
    """What injection resolves besides steps: ``known`` at once, and ``more()`` (the plugins'
    resource names) asked once, the first time a name is not known, or the whole set is read.

    A name is resolved the same way either way: a step first, then any of these names, then a
    default; ``more`` only decides when the plugins are discovered (their entry points scanned
    and imported), not what a name means. If ``more()`` raises, it is asked again next time.
    """

    def __init__(self, known: Iterable[str], more: Callable[[], Iterable[str]] | None = None):
        self._known = frozenset(known)
        self._more = more

    def _complete(self) -> frozenset[str]:
        if self._more is not None:
            self._known = self._known | frozenset(self._more())
            self._more = None
        return self._known

    @property
    def complete(self) -> bool:
        """Whether ``more()`` has been asked (the plugins discovered)."""
        return self._more is None

    def __contains__(self, name: object) -> bool:
        return name in self._known or (self._more is not None and name in self._complete())

    def __iter__(self) -> Iterator[str]:
        return iter(self._complete())

    def __len__(self) -> int:
        return len(self._complete())

    @classmethod
    def _from_iterable(cls, it: Iterable[str]) -> frozenset[str]:  # type: ignore[override]
        return frozenset(it)

    def __repr__(self) -> str:
        state = "" if self._more is None else ", plugins not asked yet"
        return f"Names({sorted(self._known)!r}{state})"


_EMPTY = inspect.Parameter.empty
_P = inspect.Parameter
# Parameter kinds injection refuses (it is by name): ``*args``, ``**kwargs``, ``a, /``.
_REFUSED = (_P.VAR_POSITIONAL, _P.VAR_KEYWORD, _P.POSITIONAL_ONLY)


def parameters(func: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """``(name, kind, default)`` of each parameter, in ``inspect.signature`` order.

    A plain function (no ``__wrapped__``, ``__signature__`` or partialmethod: nothing that would
    make ``inspect.signature`` look elsewhere) is read straight off its code object, which is
    what ``inspect.signature`` itself does for it, at a tenth of the cost: collection reads one
    signature per step, rollback and ``when=``, and a 1,000-step runbook spent a quarter of its
    load time there. Anything else goes through ``inspect.signature``.
    """
    attrs = getattr(func, "__dict__", None)
    if (
        type(func) is not FunctionType
        or attrs is None
        or "__wrapped__" in attrs
        or "__signature__" in attrs
        or "_partialmethod" in attrs
    ):
        return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]
    code = func.__code__
    names = code.co_varnames
    n_pos, n_posonly, n_kwonly = code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount
    defaults = func.__defaults__ or ()
    first_default = n_pos - len(defaults)
    out: list[tuple[str, Any, Any]] = []
    for i in range(n_pos):
        kind = _P.POSITIONAL_ONLY if i < n_posonly else _P.POSITIONAL_OR_KEYWORD
        out.append((names[i], kind, defaults[i - first_default] if i >= first_default else _EMPTY))
    index = n_pos + n_kwonly
    if code.co_flags & CO_VARARGS:
        out.append((names[index], _P.VAR_POSITIONAL, _EMPTY))
        index += 1
    kwdefaults = func.__kwdefaults__ or {}
    for name in names[n_pos : n_pos + n_kwonly]:
        out.append((name, _P.KEYWORD_ONLY, kwdefaults.get(name, _EMPTY)))
    if code.co_flags & CO_VARKEYWORDS:
        out.append((names[index], _P.VAR_KEYWORD, _EMPTY))
    return out


def analyze(
    func: Callable[..., Any],
    steps: Set[str],
    names: Set[str],
    where: tuple[str | None, int | None],
    *,
    what: str,
    extra: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
) -> tuple[Arg, ...]:
    """Resolve every parameter of ``func`` to a source, in DESIGN order: outputs, resources,
    built-ins. A name that resolves to nothing is a definition error unless it has a default."""
    try:
        params = parameters(func)
    except (TypeError, ValueError):
        raise DefinitionError(
            f"{what}: cannot read its signature", file=where[0], line=where[1]
        ) from None
    rename = rename or {}
    args: list[Arg] = []
    for name, kind, default in params:
        if kind in _REFUSED:
            raise DefinitionError(
                f"{what}: parameter {name!r} must be a plain named parameter "
                "(injection is by name)",
                file=where[0],
                line=where[1],
            )
        if name in extra:
            args.append(Arg(name, "extra", name, default))
        elif name in rename:
            args.append(Arg(name, "step", rename[name], default))
        elif name in steps:
            args.append(Arg(name, "step", name, default))
        elif name in names:
            args.append(Arg(name, "name", name, default))
        elif default is not _EMPTY:
            args.append(Arg(name, "default", name, default))
        else:
            known = sorted({*steps, *names})
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DefinitionError(
                f"{what}: parameter {name!r} is not a step, resource or built-in{hint}",
                file=where[0],
                line=where[1],
            )
    return tuple(args)


def step_name(target: Any) -> str | None:
    """The step a ``@rollback(target)`` or ``after=[target]`` means: a name, or a step function."""
    if isinstance(target, str):
        return target
    options = getattr(target, STEP_ATTR, None)
    if options is not None:
        return options.name or target.__name__
    return None
