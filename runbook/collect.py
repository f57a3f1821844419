"""Collection: import a runbook module by path and turn its decorated functions into a checked DAG.

Everything that can be wrong with a runbook's definition (a cycle, a name that resolves to nothing,
a duplicate, a rollback for a missing step, a bad option) is found here and raised as one
``DefinitionError`` naming file and line, before anything runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from inspect import CO_VARARGS, CO_VARKEYWORDS
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

from runbook import dag
from runbook.errors import DefinitionError
from runbook.groups import StepGroup
from runbook.markers import RESOURCE_ATTR, ROLLBACK_ATTR, STEP_ATTR, StepOptions
from runbook.params import ParamSpec

CONF_NAME = "runbookconf.py"
ROOT_MARKERS = ("pyproject.toml", "runbook.toml", ".git")
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
    names: frozenset[str] = frozenset()  # what injection resolves besides steps (for re-binding)
    fleet: Any = None  # runbook.fleet.Fleet: the hosts this runbook was collected for

    def levels(self) -> list[list[str]]:
        """The steps in waves whose members do not depend on each other: what may run in
        parallel, as ``runbook graph`` and the dry-run plan show it."""
        return dag.levels(list(self.steps), {n: s.predecessors for n, s in self.steps.items()})

    def dependents(self) -> dict[str, list[str]]:
        """For each step, the steps that wait for it: what a failure there leaves undone."""
        out: dict[str, list[str]] = {name: [] for name in self.steps}
        for name, step in self.steps.items():
            for pred in step.predecessors:
                out[pred].append(name)
        return out


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError("not a Python module", file=str(path))
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # sibling imports work, as in pytest's prepend mode
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except DefinitionError:
        sys.modules.pop(name, None)
        raise
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise DefinitionError(f"syntax error: {exc.msg}", file=str(path), line=exc.lineno) from None
    except SystemExit as exc:  # a runbook deciding at import that the CLI should exit: refused
        sys.modules.pop(name, None)
        line = None
        for frame in traceback.extract_tb(exc.__traceback__):
            if Path(frame.filename) == path:
                line = frame.lineno
        raise DefinitionError(
            f"import failed: the module called sys.exit({exc.code!r}) while being imported",
            file=str(path),
            line=line,
        ) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        line = None
        for frame in traceback.extract_tb(exc.__traceback__):
            if Path(frame.filename) == path:
                line = frame.lineno
        raise DefinitionError(
            f"import failed: {type(exc).__name__}: {exc}", file=str(path), line=line
        ) from None
    return module


def find_conftests(folder: Path) -> list[Path]:
    """``runbookconf.py`` files from the project root down to ``folder`` (outermost first)."""
    found: list[Path] = []
    for directory in [folder, *folder.parents]:
        candidate = directory / CONF_NAME
        if candidate.is_file():
            found.append(candidate)
        if any((directory / marker).exists() for marker in ROOT_MARKERS):
            break
    return list(reversed(found))


def _resources_of(module: ModuleType, origin: str) -> dict[str, ResourceDef]:
    out: dict[str, ResourceDef] = {}
    for value in vars(module).values():
        spec = getattr(value, RESOURCE_ATTR, None)
        if spec is not None and callable(value):
            out[spec.name] = ResourceDef(spec.name, value, origin, spec.line)
    return out


_EMPTY = inspect.Parameter.empty
_P = inspect.Parameter
# Parameter kinds injection refuses (it is by name): ``*args``, ``**kwargs``, ``a, /``.
_REFUSED = (_P.VAR_POSITIONAL, _P.VAR_KEYWORD, _P.POSITIONAL_ONLY)


def _parameters(func: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
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


def _analyze(
    func: Callable[..., Any],
    steps: frozenset[str],
    names: frozenset[str],
    where: tuple[str | None, int | None],
    *,
    what: str,
    extra: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
) -> tuple[Arg, ...]:
    """Resolve every parameter of ``func`` to a source, in DESIGN order: outputs, resources,
    built-ins. A name that resolves to nothing is a definition error unless it has a default."""
    try:
        parameters = _parameters(func)
    except (TypeError, ValueError):
        raise DefinitionError(
            f"{what}: cannot read its signature", file=where[0], line=where[1]
        ) from None
    rename = rename or {}
    args: list[Arg] = []
    for name, kind, default in parameters:
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
            known = sorted(steps | names)
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DefinitionError(
                f"{what}: parameter {name!r} is not a step, resource or built-in{hint}",
                file=where[0],
                line=where[1],
            )
    return tuple(args)


def _step_name(target: Any) -> str | None:
    if isinstance(target, str):
        return target
    options = getattr(target, STEP_ATTR, None)
    if options is not None:
        return options.name or target.__name__
    return None


def load(
    path: str | Path, *, extra_names: Iterable[str] = (), plugins: Any = None, fleet: Any = None
) -> Runbook:
    """Import the runbook at ``path`` and collect it; raise ``DefinitionError`` on any problem.

    ``fleet`` (a ``runbook.fleet.Fleet``: inventory and ``--limit``) is what host groups expand
    against; without an inventory, a module-level ``inventory = "hosts.ini"`` (relative to the
    runbook) is used.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise DefinitionError("no such runbook file", file=str(path))
    source = path.read_bytes()
    sha = hashlib.sha256(source).hexdigest()
    conf_modules: list[ModuleType] = []
    resources: dict[str, ResourceDef] = {}
    for conf in find_conftests(path.parent):
        digest = hashlib.sha256(str(conf).encode()).hexdigest()[:12]
        mod = _import(conf, f"runbookconf_{digest}")
        conf_modules.append(mod)
        resources.update(_resources_of(mod, str(conf)))  # nearer folders override outer ones
    module = _import(path, f"runbook_{path.stem}_{sha[:12]}")
    resources.update(_resources_of(module, str(path)))

    if plugins is None:
        from runbook.plugins import SETUP_PLUGINS, shared

        plugins = shared(defaults=SETUP_PLUGINS)  # built once; only the names are needed here
    names = frozenset(BUILTINS | set(resources) | set(plugins.resources()) | set(extra_names))
    return _collect(path, sha, module, resources, tuple(conf_modules), names, fleet=fleet)


def bind_params(rb: Runbook, params: Mapping[str, Any]) -> Runbook:
    """The runbook with its strategy groups expanded for the run's parameter values.

    A strategy given ``param(...)`` options expands with their defaults at load time (what
    ``list`` shows); a run, and a resume with the run's stored values, needs the real steps.
    A runbook without such groups is returned as it is.
    """
    if not any(g.bind is not None for g in rb.groups.values()):
        return rb
    return _collect(
        rb.path, rb.sha256, rb.module, rb.resources, rb.conftests, rb.names, params, fleet=rb.fleet
    )


def _collect(
    path: Path,
    sha: str,
    module: ModuleType,
    resources: dict[str, ResourceDef],
    conf_modules: tuple[ModuleType, ...],
    names: frozenset[str],
    values: Mapping[str, Any] | None = None,
    *,
    fleet: Any = None,
) -> Runbook:
    params: dict[str, ParamSpec] = {}
    raw_steps: list[tuple[str, Callable[..., Any], StepOptions]] = []
    groups: dict[str, StepGroup] = {}
    rollbacks: list[tuple[Callable[..., Any], Any]] = []
    seen: set[int] = set()
    for var, value in vars(module).items():
        if isinstance(value, ParamSpec):
            if value.name in params and params[value.name] is not value:
                raise DefinitionError(f"parameter {value.name!r} declared twice", file=str(path))
            params[value.name] = value
        elif isinstance(value, StepGroup):
            groups[var] = value.bind(values) if values is not None and value.bind else value
        elif callable(value) and id(value) not in seen:
            if (opts := getattr(value, STEP_ATTR, None)) is not None:
                seen.add(id(value))
                raw_steps.append((opts.name or value.__name__, value, opts))
            if (rb := getattr(value, ROLLBACK_ATTR, None)) is not None:
                seen.add(id(value))
                rollbacks.append((value, rb))
    raw_steps.sort(key=lambda s: s[2].line or 0)

    fleet = _fleet_for(module, path, fleet)
    for var, group in list(groups.items()):
        if group.expand is not None:  # keeps ``bind``: a run re-expands with its params
            groups[var] = replace(group.expand(fleet), bind=group.bind)
    fleet.check_limit()

    # The module's own group objects (before binding), for ``after=[release]``.
    group_vars = {id(v): var for var, v in vars(module).items() if isinstance(v, StepGroup)}
    # Expand strategy groups into ordinary steps named "<variable>.<local>".
    group_steps: dict[str, tuple[Any, StepGroup]] = {}
    aliases: dict[str, str] = {}
    for var, group in groups.items():
        members = {member.name for member in group.steps}
        for gs in group.steps:
            full = f"{var}.{gs.name}"
            bad = [a for a in (*gs.after, *(s for _, s in gs.inputs)) if a not in members]
            if bad:
                raise DefinitionError(
                    f"group {var}: step {gs.name} is after unknown {bad}",
                    file=group.file,
                    line=group.line,
                )
            ordered = tuple(f"{var}.{a}" for a in gs.after) or tuple(group.after)
            opts = replace(
                gs.options, name=full, after=ordered, file=group.file or str(path), line=group.line
            )
            raw_steps.append((full, gs.func, opts))
            group_steps[full] = (gs, group)
        if group.steps:
            aliases[var] = f"{var}.{group.steps[-1].name}"

    seen_names: set[str] = set()
    twice: set[str] = set()
    for name, _, _ in raw_steps:
        (twice if name in seen_names else seen_names).add(name)
    dupes = sorted(twice)
    if dupes:
        dup = next(o for n, _, o in raw_steps if n == dupes[0])
        raise DefinitionError(f"duplicate step name {dupes[0]!r}", file=dup.file, line=dup.line)
    clash = sorted(set(aliases) & seen_names)
    if clash:
        group = groups[clash[0]]
        raise DefinitionError(
            f"strategy group {clash[0]!r} has the name of a step", group.file, group.line
        )
    all_names = frozenset(seen_names)
    step_names = all_names | frozenset(aliases)

    rollback_of: dict[str, RollbackDef] = {}
    for func, rb in rollbacks:
        target = _step_name(rb.target)
        if target not in all_names:
            shown = target if target else repr(rb.target)
            raise DefinitionError(
                f"rollback {func.__name__!r} undoes unknown step {shown!r}",
                file=rb.file,
                line=rb.line,
            )
        if target in rollback_of:
            raise DefinitionError(f"step {target!r} has two rollbacks", file=rb.file, line=rb.line)
        args = _analyze(
            func,
            step_names,
            names,
            (rb.file, rb.line),
            what=f"rollback {func.__name__!r}",
            rename=aliases,
        )
        rollback_of[target] = RollbackDef(
            func, args, inspect.iscoroutinefunction(func), rb.file, rb.line
        )

    steps: dict[str, StepDef] = {}
    for name, func, opts in raw_steps:
        where = (opts.file, opts.line)
        _check_options(name, opts)
        gs_of, group_of = group_steps.get(name, (None, None))
        extra = gs_of.extra if gs_of else ()
        # Inside a group, a sibling is injected by its local name (``shift-5`` as ``shift_5``),
        # like a closure: the strategy's own step wins over a runbook step of the same name.
        local = aliases
        if gs_of is not None and group_of is not None:
            prefix = name.split(".", 1)[0]
            local = {
                **aliases,
                **{
                    other.name.replace("-", "_"): f"{prefix}.{other.name}"
                    for other in group_of.steps
                    if other is not gs_of
                },
                **{param: f"{prefix}.{sibling}" for param, sibling in gs_of.inputs},
            }
        args = _analyze(
            func, step_names, names, where, what=f"step {name!r}", rename=local, extra=extra
        )
        deps = [a.key for a in args if a.source == "step"]
        for callback in gs_of.uses if gs_of else ():
            cb_args = _analyze(
                callback,
                step_names,
                names,
                where,
                extra=extra,
                rename=aliases,
                what=f"{group_of.strategy if group_of else ''} callback "
                f"{getattr(callback, '__name__', callback)!r} of {name}",
            )
            deps += [a.key for a in cb_args if a.source == "step"]
        when_args = None
        if opts.when is not None:
            if not callable(opts.when):
                raise DefinitionError(f"step {name!r}: when= must be callable", *where)
            when_args = _analyze(
                opts.when, step_names, names, where, what=f"when= of step {name!r}", rename=local
            )
            deps += [a.key for a in when_args if a.source == "step"]
        after = []
        for ref in opts.after:
            if isinstance(ref, StepGroup):  # after=[release]: the group object itself
                ref = group_vars.get(id(ref), ref)
            target_name = aliases.get(ref) if isinstance(ref, str) else None
            target_name = target_name or _step_name(ref)
            if target_name not in all_names:
                raise DefinitionError(f"step {name!r}: after= names unknown step {ref!r}", *where)
            after.append(target_name)
        if name in deps:
            raise DefinitionError(f"step {name!r} depends on itself", *where)
        rollback = rollback_of.get(name)
        if gs_of is not None and gs_of.rollback is not None:
            rollback = RollbackDef(
                gs_of.rollback,
                _analyze(
                    gs_of.rollback,
                    step_names,
                    names,
                    where,
                    extra=(*extra, "output"),
                    what=f"rollback of {name!r}",
                    rename=aliases,
                ),
                inspect.iscoroutinefunction(gs_of.rollback),
                opts.file,
                opts.line,
            )
        steps[name] = StepDef(
            name=name,
            func=func,
            options=opts,
            args=args,
            deps=tuple(dict.fromkeys(deps)),
            after=tuple(dict.fromkeys(a for a in after if a not in deps)),
            when_args=when_args,
            rollback=rollback,
            is_async=inspect.iscoroutinefunction(func),
            group=name.split(".", 1)[0] if gs_of else None,
            uses=gs_of.uses if gs_of else (),
            extra=tuple(extra),
        )

    edges = {n: s.predecessors for n, s in steps.items()}
    cycle = dag.find_cycle(edges)
    if cycle:
        first = steps[cycle[0]]
        raise DefinitionError(
            f"dependency cycle: {' -> '.join(cycle)}",
            file=first.options.file,
            line=first.options.line,
        )
    order = dag.toposort(list(steps), edges)
    lock = getattr(module, "lock", None)
    if lock is not None and not isinstance(lock, str):
        raise DefinitionError(
            f"module-level lock must be a string template, got {lock!r}", file=str(path)
        )
    return Runbook(
        path=path,
        name=path.stem,
        doc=inspect.cleandoc(module.__doc__ or ""),
        sha256=sha,
        module=module,
        steps={n: steps[n] for n in order},
        params=params,
        resources=resources,
        lock=lock,
        conftests=tuple(conf_modules),
        groups=groups,
        aliases=aliases,
        names=names,
        fleet=fleet,
    )


def _fleet_for(module: ModuleType, path: Path, fleet: Any) -> Any:
    from runbook.fleet import Fleet

    declared = getattr(module, "inventory", None)
    if not isinstance(declared, str | Path):
        declared = None
    if fleet is None:
        fleet = Fleet()
    if fleet.inventory is None and declared is not None:
        fleet = Fleet.open(path.parent / declared, fleet.limit)
    return fleet


def _check_options(name: str, o: StepOptions) -> None:
    where = (o.file, o.line)
    if not isinstance(o.retries, int) or o.retries < 0:
        raise DefinitionError(f"step {name!r}: retries must be an integer >= 0", *where)
    if not isinstance(o.backoff, int | float) or o.backoff < 0:
        raise DefinitionError(f"step {name!r}: backoff must be seconds >= 0", *where)
    if o.timeout is not None and (not isinstance(o.timeout, int | float) or o.timeout <= 0):
        raise DefinitionError(f"step {name!r}: timeout must be seconds > 0", *where)
    if o.lock is not None and not isinstance(o.lock, str):
        raise DefinitionError(f"step {name!r}: lock must be a name template", *where)
    if o.kind == "probe" and (o.approval or o.reversible):
        raise DefinitionError(f"probe {name!r} is read-only: no approval or reversible", *where)
