"""runbook: safety-critical operations as plain Python functions.

A runbook is a module of ``@step`` functions; the runner builds a DAG from their signatures and runs
it with audit trail, locks, approval gates, notifications and automatic rollback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.errors import DefinitionError, ParamError, RunbookError, UsageError
from runbook.markers import Approval, probe, resource, rollback, step
from runbook.params import param

__version__ = "0.2.0"

if TYPE_CHECKING:
    from runbook.collect import Runbook, load
    from runbook.hookspecs import hookimpl
    from runbook.result import RunResult, StepResult
    from runbook.runner import Runner

# Imported lazily: ``import runbook`` in a runbook module must stay cheap and free of cycles
# (``hookimpl`` brings pluggy and every hook's spec: a plugin or a runbookconf.py asks for it).
_LAZY = {
    "hookimpl": ("runbook.hookspecs", "hookimpl"),
    "load": ("runbook.collect", "load"),
    "Runbook": ("runbook.collect", "Runbook"),
    "Runner": ("runbook.runner", "Runner"),
    "RunResult": ("runbook.result", "RunResult"),
    "StepResult": ("runbook.result", "StepResult"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'runbook' has no attribute {name!r}")


__all__ = [
    "Approval",
    "DefinitionError",
    "ParamError",
    "RunResult",
    "Runbook",
    "RunbookError",
    "Runner",
    "StepResult",
    "UsageError",
    "hookimpl",
    "load",
    "param",
    "probe",
    "resource",
    "rollback",
    "step",
]
