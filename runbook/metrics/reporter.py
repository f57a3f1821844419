"""The plugin that pushes a run's metrics when it ends or pauses (``runbook_run_finished``)."""

from __future__ import annotations

import logging
from typing import Any

from runbook.errors import MetricsError
from runbook.hookspecs import hookimpl
from runbook.metrics.sinks import MetricsSink

log = logging.getLogger("runbook.metrics")


class MetricsReporter:
    """One per Runner with ``metrics`` configured. A target that is down costs one warning line
    and never changes the run's outcome: metrics observe runs, they are not part of them."""

    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    @hookimpl
    def runbook_run_finished(self, run: Any, result: Any) -> None:
        if run.dry_run:
            return
        try:
            self.sink.push(run, result)
        except (MetricsError, OSError) as exc:
            log.warning("runbook: warning: metrics: %s", exc)

    def close(self) -> None:
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()
