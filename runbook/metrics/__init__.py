"""Run metrics for Prometheus: pushed to a pushgateway or written for node_exporter's textfile
collector when a run ends or pauses (DESIGN 17).

A runbook run is a batch job: it is not alive to be scraped, so its metrics are pushed. Counters
(``runbook_runs_total``, ``runbook_rollbacks_total``) accumulate across runs: each push reads the
previous totals from its target and adds this run's, so a dashboard can ``rate()`` them.

``metrics = "pushgateway+http://127.0.0.1:9091"`` or ``metrics = "textfile:///var/lib/node_exporter"``
in ``[tool.runbook]``.
"""

from __future__ import annotations

from runbook.metrics.exposition import Sample, parse, render, run_samples
from runbook.metrics.sinks import MetricsSink, PushGateway, TextFile, open_metrics

__all__ = [
    "MetricsSink",
    "PushGateway",
    "Sample",
    "TextFile",
    "open_metrics",
    "parse",
    "render",
    "run_samples",
]
