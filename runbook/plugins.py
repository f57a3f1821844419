"""The plugin manager: built-ins as internal plugins, entry points, and providers by URL scheme.

Set ``RUNBOOK_TRACE_HOOKS=1`` to print every hook call, its arguments and its result to stderr
(pluggy's own tracing). Every hook, the provider registrations included, is called through pluggy,
so ``@hookimpl(specname=...)``, wrappers and tracing work as pluggy documents them.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import FunctionType, MethodType, ModuleType
from typing import Any

import pluggy

from runbook import entrypoints, hookspecs
from runbook.errors import PluginError
from runbook.hookspecs import Provider, StrategySpec

ENTRY_POINT_GROUP = "runbook"

# Built-in features, registered exactly like an outside plugin would be.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "runbook.resources",
    "runbook.store.memory",
    "runbook.store.sqlite",
    "runbook.audit.sinks",
    "runbook.locks.providers",
    "runbook.notify.console",
    "runbook.routers.file",
    "runbook.builtin_strategies",
    "runbook.executors.local",
)

# The built-ins that answer what collection and configuration ask (resource names, config keys,
# runbook_configure): all that ``load()`` and the CLI's configuration need imported. The others
# bring the stores, the audit, the locks and the engine's executors; tests/core check that none
# of them implements those hooks.
SETUP_PLUGINS: tuple[str, ...] = ("runbook.resources",)
SETUP_HOOKS = ("runbook_resources", "runbook_config_keys", "runbook_configure")

# Registration hooks whose records are collected by scheme.
_PROVIDER_HOOKS = {
    "store": "runbook_run_stores",
    "lock": "runbook_lock_providers",
    "audit": "runbook_audit_sinks",
    "notifier": "runbook_notifiers",
    "router": "runbook_routers",
    "executor": "runbook_executors",
}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    source: str  # "builtin", "entry point <dist> <version>", "module", "object"
    hooks: tuple[str, ...]


_CONFIGURED: dict[int, Any] = {}


def configure(plugins: Plugins, config: Any) -> None:
    """Call ``runbook_configure`` once per configuration object (the CLI and the Runner both
    reach here with the same object)."""
    if id(config) in _CONFIGURED:
        return
    _CONFIGURED[id(config)] = config  # keeps it alive, so the id is never reused
    plugins.hook.runbook_configure(config=config)


def _import_plugin(name: str) -> ModuleType:
    """Import ``-P name`` / config ``plugins``; any failure is one line naming the module.

    A plugin is someone else's code: it may raise anything at import (a SyntaxError, a missing
    dependency, a RuntimeError), and the user needs the module name and the reason, not a
    traceback through importlib.
    """
    if not isinstance(name, str) or not name.strip() or not _is_text(name):
        raise PluginError(f"plugin module name {name!r} is not a module name")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = f" (missing: {exc.name})" if exc.name and exc.name != name else ""
        raise PluginError(f"cannot import plugin module {name!r}: {exc}{missing}") from None
    except SyntaxError as exc:
        where = f" ({exc.filename}:{exc.lineno})" if exc.filename else ""
        raise PluginError(f"plugin module {name!r} has a syntax error{where}: {exc.msg}") from None
    except Exception as exc:
        raise PluginError(
            f"plugin module {name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from None


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def implements_hooks(module: ModuleType) -> bool:
    """Whether a module has at least one ``runbook_*`` hook implementation pluggy would see."""
    marker = f"{hookspecs.PROJECT}_impl"
    return any(
        callable(value) and hasattr(value, marker) for value in vars(module).values()
    ) or any(name.startswith("runbook_") and callable(v) for name, v in vars(module).items())


class _Manager(pluggy.PluginManager):
    """pluggy's manager, with a quicker look at the attributes of a module plugin.

    ``register`` asks ``parse_hookimpl_opts`` about every name in ``dir(plugin)``, and pluggy
    answers with a static attribute lookup each time: for runbook's built-in modules and the
    installed plugins that was most of the cost of building a plugin manager. A module attribute
    that is not a function, a bound method or a static/class method wrapper, or a function
    without the ``runbook_impl`` mark, cannot be a hook implementation, so it is answered here;
    everything else (marked functions, methods, non-module plugins) is pluggy's own answer.
    """

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        if type(plugin) is ModuleType:
            value = plugin.__dict__.get(name)
            if type(value) is FunctionType:
                if _IMPL_MARK not in value.__dict__:
                    return None
            elif not isinstance(value, MethodType | staticmethod | classmethod):
                return None
        return super().parse_hookimpl_opts(plugin, name)


_IMPL_MARK = f"{hookspecs.PROJECT}_impl"

# Entry points found and loaded, kept for the process: scanning them lists every installed
# distribution (runbook.entrypoints), which cost more than the rest of a plugin manager, and
# every Runner (one per run in a service) builds one. Keyed by sys.path and the modification
# times of its folders, so installing a plugin while the process runs is still seen.
_ENTRY_POINTS: dict[str, Any] = {}


def _path_key() -> tuple[tuple[str, int], ...]:
    key = []
    for entry in sys.path:
        try:
            key.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            key.append((entry, -1))
    return tuple(key)


def _entry_point_plugins() -> list[tuple[str, Any, Any]]:
    """``(name, plugin, source)`` of every ``runbook`` entry point, loaded (cached, see above).

    A plugin that fails to load is a ``PluginError`` each time it is asked for, never cached.
    """
    key = _path_key()
    if _ENTRY_POINTS.get("key") == key:
        return list(_ENTRY_POINTS["plugins"])
    found = []
    try:
        listed = entrypoints.entry_points(group=ENTRY_POINT_GROUP)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PluginError(f"the installed plugins cannot be listed: {exc}") from None
    for ep in listed:
        source = _EntryPointSource(ep)
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {ep.name!r} from {source.dist} failed to load: {type(exc).__name__}: {exc}"
            ) from None
        found.append((ep.name, plugin, source))
    _ENTRY_POINTS.update(key=key, plugins=tuple(found))
    return found


class _EntryPointSource:
    """``entry point <dist> <version>``, read from the distribution's metadata when first shown
    (``runbook plugins``, an error): that parses a METADATA file per plugin, and every command
    loads the entry points."""

    def __init__(self, ep: Any) -> None:
        self._ep = ep
        self._dist: str | None = None

    @property
    def dist(self) -> str:
        if self._dist is None:
            dist = self._ep.dist
            self._dist = f"{dist.name} {dist.version}" if dist else "? ?"
        return self._dist

    def __str__(self) -> str:
        return f"entry point {self.dist}"


def scheme_of(url: str) -> str:
    if "://" not in url:
        raise PluginError(f"{url!r} is not a URL (expected scheme://...)")
    return url.split("://", 1)[0].lower()


class Plugins:
    """One plugin manager, plus the provider registries derived from it (cached, validated)."""

    def __init__(
        self,
        extra: Iterable[Any] = (),
        *,
        entry_points: bool = True,
        defaults: Iterable[str] = DEFAULT_PLUGINS,
    ) -> None:
        self._init = (tuple(extra), entry_points, tuple(defaults))
        self.shared = False  # the process's read-only manager (``shared()``): never added to
        self.pm = _Manager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._sources: dict[str, Any] = {}  # str, or an entry point's (shown with str())
        self._providers: dict[str, dict[str, tuple[Provider, str]]] | None = None
        self._resources: dict[str, Any] | None = None
        for name in defaults:
            self._register(importlib.import_module(name), name, "builtin")
        if entry_points:
            self._load_entry_points()
        for plugin in extra:
            self.add(plugin)
        if os.environ.get("RUNBOOK_TRACE_HOOKS"):
            self._trace()

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def _register(self, plugin: Any, name: str, source: Any) -> None:
        if self.pm.is_registered(plugin) or self.pm.get_plugin(name) is not None:
            return
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name} ({source}) is invalid: {exc}") from None
        unknown = self._unknown_hooks(plugin)
        if unknown:
            self.pm.unregister(plugin)
            raise PluginError(f"plugin {name} ({source}) {unknown}")
        self._sources[name] = source
        self._providers = self._resources = None

    def _load_entry_points(self) -> None:
        for name, plugin, source in _entry_point_plugins():
            self._register(plugin, name, source)

    def _unknown_hooks(self, plugin: Any) -> str | None:
        """What ``pm.check_pending()`` would reject, said for one plugin with a "did you mean"."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            pass
        else:
            return None
        known = [n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_")]
        bad = []
        for caller in self.pm.hook.__dict__.values():
            if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
                continue
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and not impl.optionalhook:
                    close = difflib.get_close_matches(caller.name, known, n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    bad.append(f"{caller.name}{hint}")
        if not bad:
            return None
        return "implements hooks that runbook does not define: " + ", ".join(sorted(bad))

    def add(self, plugin: Any) -> None:
        """Register a plugin object or an importable module name (``-p module`` / config)."""
        self._writable()
        if isinstance(plugin, str):
            module = _import_plugin(plugin)
            if not implements_hooks(module):
                raise PluginError(
                    f"plugin module {plugin!r} implements no runbook hooks (functions named "
                    "runbook_* marked with @runbook.hookimpl): is it the right module?"
                )
            self._register(module, plugin, "module")
        else:
            name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin):x}"
            self._register(plugin, name, "object")

    def has(self, plugin: Any) -> bool:
        """Whether ``plugin`` (an object, a module, a module name) is registered, by identity or
        by the name ``add`` would register it under."""
        if not isinstance(plugin, str) and self.pm.is_registered(plugin):
            return True
        name = plugin if isinstance(plugin, str) else getattr(plugin, "__name__", None)
        return isinstance(name, str) and self.pm.get_plugin(name) is not None

    def unshared(self) -> Plugins:
        """This manager, or for the shared one a new manager with the same plugins to add to."""
        if not self.shared:
            return self
        extra, entry_points, defaults = self._init
        return Plugins(extra, entry_points=entry_points, defaults=defaults)

    def _writable(self) -> None:
        if self.shared:
            raise PluginError(
                "the shared plugin manager is read-only: add plugins to plugins.unshared()"
            )

    def remove(self, plugin: Any) -> None:
        self._writable()
        if self.pm.is_registered(plugin):
            self.pm.unregister(plugin)
            self._providers = self._resources = None

    # -- providers --------------------------------------------------------------------------

    def providers(self, kind: str) -> dict[str, Provider]:
        return {scheme: p for scheme, (p, _) in self._registry()[kind].items()}

    def _registry(self) -> dict[str, dict[str, tuple[Provider, str]]]:
        if self._providers is None:
            registry: dict[str, dict[str, tuple[Provider, str]]] = {}
            for kind, hook_name in _PROVIDER_HOOKS.items():
                table: dict[str, tuple[Provider, str]] = {}
                caller = getattr(self.pm.hook, hook_name)
                for impl in caller.get_hookimpls():
                    for record in self._call_one(hook_name, impl.plugin):
                        if not isinstance(record, Provider):
                            raise PluginError(
                                f"plugin {impl.plugin_name} returned {record!r} from {hook_name};"
                                " expected runbook.hookspecs.Provider"
                            )
                        scheme = record.scheme.lower()
                        if scheme in table and table[scheme][1] != impl.plugin_name:
                            raise PluginError(
                                f"URL scheme {scheme}:// for {kind} is claimed by both "
                                f"{table[scheme][1]} and {impl.plugin_name}"
                            )
                        table[scheme] = (record, impl.plugin_name)
                registry[kind] = table
            self._providers = registry
        return self._providers

    def _call_one(self, hook_name: str, plugin: Any) -> list[Any]:
        """Call one plugin's implementation through pluggy (specname, wrappers and tracing apply),
        so a registration can be attributed to the plugin that made it. (pluggy >= 1.7: older
        ``subset_hook_caller`` matched plugins by attribute name and so missed ``specname``.)"""
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        results = self.pm.subset_hook_caller(hook_name, remove_plugins=others)()
        return [record for result in results for record in (result or [])]

    def open(self, kind: str, url: str, **options: Any) -> Any:
        return self._provider(kind, url).open(url, **options)

    def check(self, kind: str, url: str) -> None:
        """Refuse ``url`` now, without opening anything: no plugin serves its scheme
        (``PluginError``), or the provider's ``check`` finds it wrong (``ConfigError``)."""
        provider = self._provider(kind, url)
        if provider.check is not None:
            provider.check(url)

    def _provider(self, kind: str, url: str) -> Provider:
        scheme = scheme_of(url)
        table = self.providers(kind)
        if scheme not in table:
            known = ", ".join(f"{s}://" for s in sorted(table)) or "none"
            hint = {
                "postgresql": " (pip install runbook-postgres)",
                "redis": " (pip install runbook-redis)",
                "slack": " (pip install runbook-slack)",
                "teams": " (pip install runbook-slack)",
                "smtp": " (pip install runbook-email)",
            }.get(scheme, "")
            raise PluginError(
                f"no {kind} plugin for {scheme}:// {hint}(known: {known})".replace("  ", " ")
            )
        return table[scheme]

    def strategies(self) -> dict[str, StrategySpec]:
        out: dict[str, StrategySpec] = {}
        for records in self.pm.hook.runbook_strategies():
            for record in records or []:
                out[record.name] = record
        return out

    def resources(self) -> dict[str, Any]:
        """Resource factories by name. A registration hook, like the providers: asked once per
        set of registered plugins (every run asks, and collection asks for the names)."""
        if self._resources is None:
            out: dict[str, Any] = {}
            # pluggy returns results last-registered first; built-ins lose to outside plugins.
            for mapping in reversed(self.pm.hook.runbook_resources()):
                out.update(mapping or {})
            self._resources = out
        return dict(self._resources)

    def describe(self) -> list[PluginInfo]:
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or []))
            infos.append(
                PluginInfo(name=name, source=str(self._sources.get(name, "object")), hooks=hooks)
            )
        return infos

    def has_impls(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def _trace(self) -> None:
        """pluggy's tracing: each call with its arguments, each result, indented by nesting."""
        self.pm.trace.root.setwriter(_trace_writer)
        self.pm.enable_tracing()


# The managers of shared(), by (entry_points, defaults).
_SHARED: dict[tuple[bool, tuple[str, ...]], tuple[Any, Plugins]] = {}


def shared(*, entry_points: bool = True, defaults: Iterable[str] = DEFAULT_PLUGINS) -> Plugins:
    """The process's plugin manager with the built-in plugins, and the installed ones with
    ``entry_points``: built once for every Runner that brings no plugins of its own, so that a
    service making a Runner per run does not build a plugin manager (and ask every plugin for
    its providers) per run. It is read-only; ``unshared()`` gives a manager to add plugins to.
    Built again when a plugin is installed while the process runs, or hook tracing is switched.
    ``defaults=SETUP_PLUGINS`` is the one ``load()`` asks for resource names.
    """
    which = (entry_points, tuple(defaults))
    key = (os.environ.get("RUNBOOK_TRACE_HOOKS", ""), _path_key() if entry_points else None)
    cached = _SHARED.get(which)
    if cached is not None and cached[0] == key:
        return cached[1]
    plugins = Plugins(entry_points=entry_points, defaults=which[1])
    plugins.shared = True
    _SHARED[which] = (key, plugins)
    return plugins


def _trace_writer(text: str) -> None:
    for line in text.splitlines():
        sys.stderr.write(f"[runbook hook] {line}\n")
