"""runbook-temporal: the ``temporal://`` executor, runs that go on by themselves across workers.

``executor = "temporal://127.0.0.1:7233?namespace=default"`` (or ``--executor``): a run is a
Temporal workflow driving runbook's coordinator; each step attempt is an activity on the task
queue of ``@step(queue=...)`` (default ``runbook``), run by ``runbook worker`` processes on any
host with the project checkout. See docs/scaling.md.
"""

from __future__ import annotations

from typing import Any

from runbook.hookspecs import Provider, hookimpl

__version__ = "0.2.0"


def _open(url: str, **_: Any) -> Any:
    from runbook_temporal.executor import TemporalExecutor

    return TemporalExecutor(url)


@hookimpl
def runbook_executors() -> list[Provider]:
    return [Provider("temporal", _open, "runs as Temporal workflows, steps on runbook workers")]


@hookimpl
def runbook_cli_commands(group: Any) -> None:
    from runbook_temporal.cli import worker_cmd

    group.add_command(worker_cmd)
