"""The built-in deployment strategies, as the plugin every plugin manager registers.

A module beside the ``runbook.strategies`` package, not in it, so that registering it imports
nothing more: ``blue_green``, ``canary`` and ``rolling`` (and the probes and inventory parsers
they use) are imported when the strategies are asked for (``runbook.strategies.get``,
``runbook plugins``), not by every ``Runner`` (``runbook runs``, ``show``, ``approve``, an
``exec`` of a runbook that uses none of them).
"""

from __future__ import annotations

from runbook.hookspecs import StrategySpec, hookimpl


@hookimpl
def runbook_strategies() -> list[StrategySpec]:
    from runbook import strategies

    return strategies.builtin()
