"""Collection: import a runbook module by path and turn its decorated functions into a checked DAG.

Everything that can be wrong with a runbook's definition (a cycle, a name that resolves to nothing,
a duplicate, a rollback for a missing step, a bad option) is found here and raised as one
``DefinitionError`` naming file and line, before anything runs.

The parts live by concept: ``runbook.definition`` (what collection makes: ``Runbook``,
``StepDef``, ``Arg``...), ``runbook.injection`` (how a parameter resolves), ``runbook.importer``
(importing the module and its ``runbookconf.py`` files). Their names are importable from here too.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from runbook import dag
from runbook.definition import Arg, ResourceDef, RollbackDef, Runbook, StepDef
from runbook.errors import DefinitionError
from runbook.groups import StepGroup
from runbook.importer import CONF_NAME, ROOT_MARKERS, find_conftests, import_path, resources_of
from runbook.injection import BUILTINS, Names, analyze, parameters, step_name
from runbook.made import Fields, lost, lost_message, made_while
from runbook.markers import ROLLBACK_ATTR, STEP_ATTR, StepOptions
from runbook.params import ParamSpec
from runbook.values import is_async, is_seconds, is_word

# The names of the modules split out of this one, kept where they were.
_parameters = parameters
_analyze = analyze

__all__ = [
    "BUILTINS",
    "CONF_NAME",
    "ROOT_MARKERS",
    "Arg",
    "Names",
    "ResourceDef",
    "RollbackDef",
    "Runbook",
    "StepDef",
    "bind_params",
    "find_conftests",
    "load",
]


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
        mod = import_path(conf, f"runbookconf_{digest}")
        conf_modules.append(mod)
        resources.update(resources_of(mod, str(conf)))  # nearer folders override outer ones
    with made_while() as made:
        module = import_path(path, f"runbook_{path.stem}_{sha[:12]}")
    resources.update(resources_of(module, str(path)))

    known = BUILTINS | set(resources) | set(extra_names)
    if plugins is None:
        # The plugins' resource names are asked only for a name none of the others is: that
        # scans the installed distributions' entry points and imports every plugin, which cost
        # more than the rest of the load of a 1,000-step runbook.
        names = Names(known, _plugin_resource_names)
    else:
        names = Names(known | set(plugins.resources()))
    return _collect(
        path, sha, module, resources, tuple(conf_modules), names, fleet=fleet, made=made
    )


def _plugin_resource_names() -> Iterable[str]:
    from runbook.plugins import SETUP_PLUGINS, shared

    return shared(defaults=SETUP_PLUGINS).resources()  # built once; only the names are needed


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
    names: Set[str],
    values: Mapping[str, Any] | None = None,
    *,
    fleet: Any = None,
    made: Iterable[Fields] | None = None,
) -> Runbook:
    """``made``: what the module's import made (``runbook.made``), refused where this scan of
    its names does not find it."""
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
    if made is not None:
        held = [(step, opts.file, opts.line) for step, _, opts in raw_steps]
        missing = lost(made, str(path), held, [(g.file, g.line) for g in groups.values()])
        if missing is not None:
            raise DefinitionError(lost_message(missing), file=str(path), line=missing.line)
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
        target = step_name(rb.target)
        if target not in all_names:
            shown = target if target else repr(rb.target)
            raise DefinitionError(
                f"rollback {func.__name__!r} undoes unknown step {shown!r}",
                file=rb.file,
                line=rb.line,
            )
        if target in rollback_of:
            raise DefinitionError(f"step {target!r} has two rollbacks", file=rb.file, line=rb.line)
        args = analyze(
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
        args = analyze(
            func, step_names, names, where, what=f"step {name!r}", rename=local, extra=extra
        )
        deps = [a.key for a in args if a.source == "step"]
        for callback in gs_of.uses if gs_of else ():
            cb_args = analyze(
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
            if is_async(opts.when):
                raise DefinitionError(  # its coroutine is truthy: the step would always run
                    f"step {name!r}: when= must be a plain function, not async def (it decides "
                    "before the step starts; an async one returns a coroutine, always true)",
                    *where,
                )
            when_args = analyze(
                opts.when, step_names, names, where, what=f"when= of step {name!r}", rename=local
            )
            deps += [a.key for a in when_args if a.source == "step"]
        after = []
        for ref in opts.after:
            if isinstance(ref, StepGroup):  # after=[release]: the group object itself
                ref = group_vars.get(id(ref), ref)
            target_name = aliases.get(ref) if isinstance(ref, str) else None
            target_name = target_name or step_name(ref)
            if target_name not in all_names:
                called = getattr(ref, "__name__", None) if callable(ref) else None
                what = f"{called}, which is not a step" if called else f"unknown step {ref!r}"
                raise DefinitionError(f"step {name!r}: after= names {what}", *where)
            after.append(target_name)
        if name in deps:
            raise DefinitionError(f"step {name!r} depends on itself", *where)
        rollback = rollback_of.get(name)
        if gs_of is not None and gs_of.rollback is not None:
            rollback = RollbackDef(
                gs_of.rollback,
                analyze(
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
    if not is_word(name):
        raise DefinitionError(  # --step NAME, the audit and the store all refer to it
            f"a step name must be a non-empty word without spaces, got {name!r}", *where
        )
    if (
        type(o.reversible) is not bool
        or type(o.required) is not bool
        or type(o.idempotent) is not bool
    ):
        for flag in ("reversible", "required", "idempotent"):
            value = getattr(o, flag)
            if type(value) is not bool:  # reversible="no", idempotent="false": truthy strings
                raise DefinitionError(
                    f"step {name!r}: {flag} must be True or False, got {value!r}", *where
                )
    if isinstance(o.retries, bool) or not isinstance(o.retries, int) or o.retries < 0:
        raise DefinitionError(f"step {name!r}: retries must be an integer >= 0", *where)
    if not is_seconds(o.backoff) or o.backoff < 0:
        raise DefinitionError(f"step {name!r}: backoff must be seconds >= 0", *where)
    if not is_seconds(o.backoff_max) or o.backoff_max < 0:
        raise DefinitionError(f"step {name!r}: backoff_max must be seconds >= 0", *where)
    if o.timeout is not None and (not is_seconds(o.timeout) or o.timeout <= 0):
        raise DefinitionError(f"step {name!r}: timeout must be seconds > 0", *where)
    if o.lock is not None and (not isinstance(o.lock, str) or not o.lock.strip()):
        raise DefinitionError(f"step {name!r}: lock must be a name template", *where)
    if o.kind == "probe" and (o.approval or o.reversible):
        raise DefinitionError(f"probe {name!r} is read-only: no approval or reversible", *where)
