"""``runbook worker --executor temporal://...``: serve runs from any host with the project checkout.

A worker on the default task queue (``runbook``, or the URL's ``queue``) runs the run workflows
and every step without ``queue=``; ``--queue db`` (repeatable) serves the steps declared
``@step(queue="db")`` instead or as well. Each worker uses the project's configured run store,
audit sinks and locks, so every worker of a team must be configured with shared ones
(PostgreSQL, Redis). SIGTERM/SIGINT stop it gracefully: attempts in flight get the heartbeat
timeout to finish before the server hands them to someone else.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from runbook_temporal.activities import Activities
from runbook_temporal.bookkeeping import RunActivities
from runbook_temporal.runtime import WorkerRuns
from runbook_temporal.url import TemporalURL
from runbook_temporal.workflow import RunWorkflow

_PASSTHROUGH = ("runbook", "runbook_temporal")


def _exit_without_teardown() -> None:
    """Temporal's client threads can abort CPython's finalization (temporalio/sdk-python#300):
    a ``runbook`` command that connected ends with ``os._exit`` after flushing its output."""
    cli = sys.modules.get("runbook.cli")
    if cli is not None and hasattr(cli, "HARD_EXIT") and not cli.HARD_EXIT:
        cli.HARD_EXIT.append(True)


async def connect(url: TemporalURL) -> Client:
    from runbook.errors import RunbookError

    _exit_without_teardown()
    try:
        return await Client.connect(url.address, namespace=url.namespace)
    except Exception as exc:
        raise RunbookError(f"cannot reach Temporal at {url.address}: {exc}") from None


def workers(
    client: Client,
    url: TemporalURL,
    runs: WorkerRuns,
    queues: Sequence[str],
    concurrency: int = 100,
) -> list[Worker]:
    """One Temporal worker per task queue; the default queue also runs the workflows."""
    activities = [*Activities(runs, concurrency).all(), *RunActivities(runs).all()]
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*_PASSTHROUGH)
    )
    out = []
    for queue in dict.fromkeys(queues or [url.queue]):
        main = queue == url.queue
        out.append(
            Worker(
                client,
                task_queue=queue,
                workflows=[RunWorkflow] if main else [],
                activities=activities,
                workflow_runner=runner,
                max_concurrent_activities=concurrency,
                graceful_shutdown_timeout=timedelta(seconds=url.heartbeat),
                # A worker that died holds its cached workflows: hand them on as fast as its
                # attempts are (the default waits 10 s).
                sticky_queue_schedule_to_start_timeout=timedelta(seconds=url.heartbeat),
            )
        )
    return out


async def serve(
    url: TemporalURL,
    runner: Any,
    root: Path,
    queues: Sequence[str],
    *,
    concurrency: int = 100,
    ready: Any = None,
) -> None:
    client = await connect(url)
    notifier = None
    if runner.notify_rules:
        from runbook.notify.dispatch import NotificationService

        notifier = NotificationService(
            runner.plugins, runner.notify_rules, templates=runner.templates
        )
        await notifier.start()
    running = workers(client, url, WorkerRuns(runner, root, notifier), queues, concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.ensure_future(w.run()) for w in running]
    if ready is not None:
        ready()
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    for w in running:
        await w.shutdown()
    if notifier is not None:
        await notifier.flush(runner.flush_deadline)
        await notifier.aclose()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
