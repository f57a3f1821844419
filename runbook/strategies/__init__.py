"""Deployment strategies: functions that expand into ordinary steps (DESIGN.md 6).

::

    from runbook.strategies import canary
    release = canary("web", weights=[5, 25, 50, 100], bake=300, analysis=error_rate_ok)

becomes the steps ``release.shift-5``, ``release.bake-5``, ``release.analyze-5``, ... so audit,
locks, approvals and rollback treat them like hand-written steps. The built-ins register through
the ``runbook_strategies`` hook like a plugin's would (``runbook.builtin_strategies``, which
imports this package only when asked); ``get(name)`` finds any registered one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runbook.errors import PluginError
from runbook.hookspecs import StrategySpec
from runbook.strategies import blue_green as _blue_green
from runbook.strategies import canary as _canary
from runbook.strategies import rolling as _rolling
from runbook.strategies.base import resolves_params

# Options may be param(...) objects, resolved when the run starts (strategies.base).
blue_green = resolves_params(_blue_green.blue_green)
canary = resolves_params(_canary.canary)
rolling = resolves_params(_rolling.rolling)

__all__ = ["blue_green", "canary", "get", "rolling"]


def builtin() -> list[StrategySpec]:
    """The built-ins, as their plugin (``runbook.builtin_strategies``) registers them."""
    return [
        StrategySpec("blue_green", blue_green, "deploy the idle color, check it, switch traffic"),
        StrategySpec("canary", canary, "shift traffic by weights with bake and analysis"),
        StrategySpec("rolling", rolling, "deploy hosts in batches, health-checking each"),
    ]


def get(name: str, plugins: Any = None) -> Callable[..., Any]:
    """The factory of strategy ``name`` from every loaded plugin (built-ins, entry points).

    Pass a ``runbook.plugins.Plugins`` to look in a specific plugin set; by default one with the
    built-ins and the installed entry points is created.
    """
    if plugins is None:
        from runbook.plugins import Plugins

        plugins = Plugins()
    specs = plugins.strategies()
    if name not in specs:
        known = ", ".join(sorted(specs)) or "none"
        raise PluginError(f"no strategy named {name!r} (known: {known})")
    return specs[name].factory
