"""Audit sink throughput: what one durable event costs on this machine.

    .venv/bin/python bench/audit.py [--events 2000] [--dir /path/on/the/real/disk]

Appends realistic events (a step's params, output and timing, ~700 bytes of JSON) one at a time,
as the engine does, and prints events/second and per-event latency (median, p99) per sink as a
table, then the same numbers as one JSON line. ``jsonl`` fsyncs every event (its default);
``jsonl-nofsync`` shows what that fsync costs. ``--dir`` should be on the disk the trail will
live on: fsync cost is a property of the disk, not of runbook.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from runbook.audit.events import AuditEvent, MemorySink
from runbook.audit.query import open_sink

KINDS = ("step_started", "step_succeeded", "lock_acquired", "change_recorded", "lock_released")


def realistic(i: int) -> AuditEvent:
    kind = KINDS[i % len(KINDS)]
    return AuditEvent(
        kind=kind,
        run_id="01JDBENCH7Q4M2Z8X9RTYV6K3N",
        runbook={"path": "runbooks/deploy.py", "sha256": "9f2c" * 16},
        step=f"rollout.shift-{(i // len(KINDS)) % 100}",
        actor="alice@example.com",
        host="ops-runner-3.prod.internal",
        env="prod",
        at=f"2026-11-23T18:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}000+00:00",
        params={"version": "2026.11.23-4f1c2e9", "replicas": 6, "registry_token": "***"},
        data={
            "attempt": 1,
            "duration_ms": 1234 + i % 97,
            "output": {"color": "green", "weight": 25, "instances": [f"web-{n}" for n in range(6)]},
            "lock": "web-prod",
            "fencing_token": 4200 + i,
        },
    )


def measure(sink: Any, events: list[AuditEvent]) -> dict[str, Any]:
    latencies = []
    started = time.perf_counter()
    for event in events:
        t0 = time.perf_counter()
        sink.append(event)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    latencies.sort()
    report = sink.verify()
    assert report.ok and report.checked == len(events), report
    return {
        "events": len(events),
        "events_per_s": round(len(events) / elapsed),
        "median_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
        "total_s": round(elapsed, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a temp dir)")
    args = parser.parse_args()
    events = [realistic(i) for i in range(args.events)]
    size = len(json.dumps(events[1].chained(2, "0" * 64).to_dict(), separators=(",", ":")))

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        sinks: dict[str, Any] = {
            "memory": MemorySink(),
            "jsonl": open_sink(f"jsonl://{tmp}/audit.jsonl"),
            "jsonl-nofsync": open_sink(f"jsonl://{tmp}/nofsync.jsonl", fsync=False),
            "sqlite": open_sink(f"sqlite:///{tmp}/runbook.db"),
        }
        results = {}
        for name, sink in sinks.items():
            try:
                results[name] = measure(sink, events)
            finally:
                sink.close()

    print(
        f"audit sinks: {args.events} events of ~{size} bytes, one append at a time "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()})"
    )
    print(f"{'sink':<15}{'events/s':>10}{'median ms':>11}{'p99 ms':>9}{'total s':>9}")
    for name, r in results.items():
        print(
            f"{name:<15}{r['events_per_s']:>10}{r['median_ms']:>11.3f}{r['p99_ms']:>9.3f}"
            f"{r['total_s']:>9.2f}"
        )
    print(
        json.dumps(
            {"bench": "audit", "event_bytes": size, "results": results}, separators=(",", ":")
        )
    )


if __name__ == "__main__":
    main()
