"""Where run metrics go: a Prometheus pushgateway, or node_exporter's textfile collector.

Each target holds one group per (runbook, env). A push reads the group's previous counters,
adds the run's, and replaces the group, so counters keep counting across processes. Two runs of
the same runbook and env ending at the same instant can race on a pushgateway (last write
wins); the textfile target is exact (an flock around read-modify-write).
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx

from runbook.context import RunInfo
from runbook.errors import MetricsError, UsageError
from runbook.metrics.exposition import Sample, parse, render, run_samples
from runbook.result import RunResult
from runbook.urls import parse_url

GROUP_LABELS = ("runbook", "env")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class MetricsSink(Protocol):
    """Where a finished run's metrics go (``metrics = "pushgateway+http://..."`` or
    ``"textfile://..."``): a plugin may add another without touching the engine."""

    def push(self, run: RunInfo, result: RunResult) -> list[Sample]:
        """Merge this run's samples into what the destination already holds for the runbook and
        env (counters keep counting across runs) and store them; returns what was written."""
        ...


def _now() -> datetime:
    return datetime.now(UTC)


class PushGateway:
    """``pushgateway+http://HOST:9091`` (or ``+https``; ``user:password@`` for basic auth)."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, now: Callable[[], datetime] = _now
    ) -> None:
        parsed = parse_url(url, "metrics")
        parts, scheme = parsed.parts, parsed.parts.scheme.removeprefix("pushgateway+")
        if scheme not in ("http", "https") or not parsed.host:
            raise UsageError(f"metrics: expected pushgateway+http://HOST:PORT, got {scheme}")
        port = f":{parsed.port}" if parsed.port else ""
        self.base = f"{scheme}://{parts.hostname}{port}{parts.path.rstrip('/')}"
        self.where = f"{parts.hostname}{port}"  # for messages: never the credentials
        auth = (parts.username or "", parts.password or "") if parts.username else None
        self.client = httpx.Client(timeout=timeout, auth=auth)
        self.now = now

    def group_path(self, run: RunInfo) -> str:
        """The pushgateway group of one runbook and env: base64 labels, so any name is safe."""

        def b64(value: str) -> str:
            return base64.urlsafe_b64encode(value.encode()).decode() or "="

        return (
            f"{self.base}/metrics/job/runbook/runbook@base64/{b64(run.name)}"
            f"/env@base64/{b64(run.env)}"
        )

    def previous(self, run: RunInfo) -> list[Sample]:
        """The group's samples as the pushgateway holds them: a PUT replaces the group, so
        counters must be read back to go on counting."""
        response = self.client.get(f"{self.base}/metrics")
        response.raise_for_status()
        mine = []
        for sample in parse(response.text):
            labels = dict(sample.labels)
            if labels.get("job") != "runbook":
                continue
            if labels.get("runbook") != run.name or labels.get("env") != run.env:
                continue
            labels.pop("job", None)
            labels.pop("instance", None)
            mine.append(Sample(sample.name, tuple(sorted(labels.items())), sample.value))
        return mine

    def push(self, run: RunInfo, result: RunResult) -> list[Sample]:
        """Read back, merge, PUT; any HTTP failure is a ``MetricsError`` naming the host only
        (the URL may hold credentials)."""
        try:
            samples = run_samples(run, result, self.previous(run), now=self.now())
            body = render(_without(samples, GROUP_LABELS))
            response = self.client.put(self.group_path(run), content=body.encode())
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise MetricsError(f"pushgateway {self.where}: {type(exc).__name__}") from None
        return samples

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()


class TextFile:
    """``textfile:///var/lib/node_exporter/textfile``: one ``runbook-NAME-ENV.prom`` per group,
    replaced atomically so the collector never reads half a file."""

    def __init__(self, url: str, *, now: Callable[[], datetime] = _now) -> None:
        path = url.split("://", 1)[1]
        if not path:
            raise UsageError("metrics: textfile:// needs a directory, e.g. textfile:///var/lib/x")
        self.folder = Path(path)
        self.now = now

    def path_for(self, run: RunInfo) -> Path:
        """One file per runbook and env, so runs of other runbooks never overwrite it."""
        return self.folder / f"runbook-{_SAFE.sub('_', run.name)}-{_SAFE.sub('_', run.env)}.prom"

    def push(self, run: RunInfo, result: RunResult) -> list[Sample]:
        """Merge with the file's samples under a lock (concurrent runs of one runbook), then
        replace the file atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path_for(run)
        with open(target.with_suffix(".lock"), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            previous = parse(target.read_text()) if target.exists() else []
            samples = run_samples(run, result, previous, now=self.now())
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(render(samples))
            os.replace(tmp, target)
        return samples

    def close(self) -> None:
        """Nothing stays open between pushes."""


def _without(samples: list[Sample], names: tuple[str, ...]) -> list[Sample]:
    return [
        Sample(s.name, tuple((k, v) for k, v in s.labels if k not in names), s.value)
        for s in samples
    ]


def open_metrics(url: str) -> PushGateway | TextFile:
    """The target for a ``metrics = "..."`` URL; an unknown scheme is a usage error."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme.startswith("pushgateway+"):
        return PushGateway(url)
    if scheme == "textfile":
        return TextFile(url)
    raise UsageError(
        f"metrics: unknown target {scheme or url!r}: use pushgateway+http://HOST:PORT "
        "or textfile:///DIR"
    )
