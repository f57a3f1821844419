"""The plugin manager: built-ins as internal plugins, entry points, and providers by URL scheme.

Set ``RUNBOOK_TRACE_HOOKS=1`` to print every hook call and its result to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from runbook import hookspecs
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
    "runbook.strategies",
)

# Registration hooks whose records are collected by scheme.
_PROVIDER_HOOKS = {
    "store": "runbook_run_stores",
    "lock": "runbook_lock_providers",
    "audit": "runbook_audit_sinks",
    "notifier": "runbook_notifiers",
    "router": "runbook_routers",
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
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._sources: dict[str, str] = {}
        self._providers: dict[str, dict[str, tuple[Provider, str]]] | None = None
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

    def _register(self, plugin: Any, name: str, source: str) -> None:
        if self.pm.is_registered(plugin) or self.pm.get_plugin(name) is not None:
            return
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name} ({source}) is invalid: {exc}") from None
        self._sources[name] = source
        self._providers = None

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} from {dist} {version} failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self._register(plugin, ep.name, f"entry point {dist} {version}")

    def add(self, plugin: Any) -> None:
        """Register a plugin object or an importable module name (``-p module`` / config)."""
        if isinstance(plugin, str):
            try:
                module: ModuleType = importlib.import_module(plugin)
            except ImportError as exc:
                raise PluginError(f"cannot import plugin module {plugin!r}: {exc}") from None
            self._register(module, plugin, "module")
        else:
            name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin):x}"
            self._register(plugin, name, "object")

    def remove(self, plugin: Any) -> None:
        if self.pm.is_registered(plugin):
            self.pm.unregister(plugin)
            self._providers = None

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
                    records = getattr(impl.plugin, hook_name)() or []
                    for record in records:
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

    def open(self, kind: str, url: str, **options: Any) -> Any:
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
        return table[scheme].open(url, **options)

    def strategies(self) -> dict[str, StrategySpec]:
        out: dict[str, StrategySpec] = {}
        for records in self.pm.hook.runbook_strategies():
            for record in records or []:
                out[record.name] = record
        return out

    def resources(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # pluggy returns results last-registered first; built-ins must lose to outside plugins.
        for mapping in reversed(self.pm.hook.runbook_resources()):
            out.update(mapping or {})
        return out

    def describe(self) -> list[PluginInfo]:
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or []))
            infos.append(
                PluginInfo(name=name, source=self._sources.get(name, "object"), hooks=hooks)
            )
        return infos

    def has_impls(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def _trace(self) -> None:
        def before(hook_name: str, impls: Any, kwargs: Any) -> None:
            print(
                f"[runbook hook] {hook_name} -> {[i.plugin_name for i in impls]}", file=sys.stderr
            )

        def after(outcome: Any, hook_name: str, impls: Any, kwargs: Any) -> None:
            pass

        self.pm.add_hookcall_monitoring(before, after)
