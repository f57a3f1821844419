"""Every hook a runbook plugin can implement.

runbook's own features (the built-in resources, the memory/SQLite stores, the file locks, the audit
sinks, the console notifier, the strategies, the terminal reporter) register through these same
hooks as internal plugins, so anything they do a pip-installed plugin can do too.

Two shapes of hook:

* Registration hooks (``runbook_run_stores``, ``runbook_lock_providers``...) return small frozen
  records (``Provider``, ``StrategySpec``). They are *not* ``firstresult``: every plugin's
  records are collected, validated in one place (``runbook.plugins``), and a URL scheme claimed
  twice is an error naming both plugins, instead of the last one silently winning.
* Lifecycle hooks (``runbook_run_started`` ... ``runbook_event``) are notifications; their return
  value is ignored. They are not ``historic``: a plugin registered mid-run has no use for the
  events of a run it did not see start. A lifecycle hook that raises is reported and does not stop
  the run: the audit sinks, not the hooks, are the safety-relevant record.

As in pytest, an implementation may accept any subset of a hook's arguments, which is what lets a
hook gain arguments without breaking plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from runbook.audit.events import AuditEvent
    from runbook.context import RunInfo
    from runbook.result import RunResult, StepResult

PROJECT = "runbook"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class Provider:
    """A plugin's claim on a URL scheme: ``open(url, **options)`` returns the provider object.

    ``options`` come from configuration (for example ``best_effort = true`` on an audit sink).
    ``check(url)``, when given, validates a URL without opening anything and raises a
    ``ConfigError`` saying what is wrong: a provider opened only when a step first asks for it
    (a router) is checked with it when the Runner is built, before any run starts.
    """

    scheme: str
    open: Callable[..., Any]
    description: str = ""
    check: Callable[[str], object] | None = None


@dataclass(frozen=True)
class StrategySpec:
    """A deployment strategy: ``factory(name, ...)`` returns a ``StepGroup`` (runbook.groups)."""

    name: str
    factory: Callable[..., Any]
    description: str = ""


# -- configuration ----------------------------------------------------------------------------


@hookspec
def runbook_config_keys() -> list[str]:
    """Extra top-level ``[tool.runbook]`` keys this plugin reads (``[tool.runbook.<plugin>]``).

    Unknown keys are errors; a plugin that reads its own section declares it here so that the
    section is not reported as a typo.
    """
    ...


@hookspec
def runbook_configure(config: Any) -> None:
    """Called once the configuration is loaded and the env selected, before any run starts."""


@hookspec
def runbook_cli_commands(group: click.Group) -> None:
    """Add subcommands to the ``runbook`` CLI (``group.add_command(...)``)."""


# -- providers ----------------------------------------------------------------------------------


@hookspec
def runbook_resources() -> Mapping[str, Callable[..., Any]]:
    """Resource factories by name, injected like the runbook's own ``@resource`` functions.

    They rank after the runbook's and the runbookconf.py resources, before the built-ins.
    """
    ...


@hookspec
def runbook_run_stores() -> list[Provider]:
    """Run stores by URL scheme (``sqlite``, ``memory``, ``postgresql``)."""
    ...


@hookspec
def runbook_lock_providers() -> list[Provider]:
    """Lock providers by URL scheme (file, sqlite, memory, redis, postgresql)."""
    ...


@hookspec
def runbook_audit_sinks() -> list[Provider]:
    """Audit sinks by URL scheme (jsonl, sqlite, logging, memory, postgresql)."""
    ...


@hookspec
def runbook_notifiers() -> list[Provider]:
    """Notification channels by URL scheme (``console``, ``slack``, ``teams``, ``smtp``...)."""
    ...


@hookspec
def runbook_routers() -> list[Provider]:
    """Traffic routers by URL scheme (``file``, ``memory``), the ``router`` resource's backends."""
    ...


@hookspec
def runbook_executors() -> list[Provider]:
    """Executors by URL scheme (``local``, ``temporal``): where one step attempt runs.

    ``open(url, clock=..., max_parallel=...)`` is called once per run and returns an object
    implementing ``runbook.executors.Executor``. The coordinator, the recorder, locks and gates
    stay runbook's; an executor only runs attempts and reports their outcome.
    """
    ...


@hookspec
def runbook_strategies() -> list[StrategySpec]:
    """Deployment strategies (``blue_green``, ``canary``, ``rolling``) by name."""
    ...


# -- lifecycle ----------------------------------------------------------------------------------


@hookspec
def runbook_run_started(run: RunInfo) -> None:
    """A run (new or resumed) is about to schedule its first step."""


@hookspec
def runbook_step_started(run: RunInfo, step: str, attempt: int) -> None:
    """A step's attempt is starting (its state is already stored as running)."""


@hookspec
def runbook_step_finished(run: RunInfo, step: str, result: StepResult) -> None:
    """A step reached a final status: succeeded, failed, skipped, awaiting approval, cancelled."""


@hookspec
def runbook_rollback_finished(run: RunInfo, step: str, result: StepResult) -> None:
    """A rollback ran; ``result.status`` is ``rolled_back`` or ``rollback_failed``."""


@hookspec
def runbook_run_finished(run: RunInfo, result: RunResult) -> None:
    """The run ended (any status, including paused)."""


@hookspec
def runbook_event(run: RunInfo, event: AuditEvent) -> None:
    """Every audit event, after the required sinks stored it. Notifiers subscribe here."""


@hookspec
def runbook_progress(run: RunInfo, step: str | None, message: str, fraction: float | None) -> None:
    """Progress on a long wait (bake time, polling), for the terminal and for notifiers."""
