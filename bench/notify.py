"""Notification latency: from a failed ``run_finished`` handed to the service to the webhook hit.

    .venv/bin/python bench/notify.py [--events 200] [--interval 0.005] [--burst]

A threaded ``http.server`` on 127.0.0.1 plays the webhook receiver and stamps each request's
arrival with ``time.perf_counter``; the service runs the real ``webhook+http://`` channel (the
runbook-slack plugin, httpx, HMAC signing). Events are handed over one every ``--interval``
seconds, as a busy run would emit them, or all at once with ``--burst`` (the queueing worst case:
one channel delivers in order). Prints median, p99 and max latency as a table, then one JSON line.
Targets: median < 50 ms, p99 < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runbook.audit.events import AuditEvent
from runbook.context import RunInfo
from runbook.notify.dispatch import NotificationService
from runbook.plugins import Plugins

TARGET_MEDIAN_MS = 50.0
TARGET_P99_MS = 1000.0
RUN = RunInfo(
    run_id="01JDBENCH",
    runbook="runbooks/deploy.py",
    name="deploy",
    sha256="0" * 64,
    env="prod",
    actor="alice",
)


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver behind a proxy would

    def do_POST(self) -> None:
        arrived = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        key = json.loads(body)["message"]["data"]["event"]["data"]["bench_id"]
        with self.server.lock:
            self.server.arrivals[key] = arrived
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def failed_run(i: int) -> AuditEvent:
    return AuditEvent(
        kind="run_finished",
        run_id=RUN.run_id,
        env="prod",
        actor="alice",
        host="bench",
        at="2026-11-23T18:00:00+00:00",
        runbook={"path": RUN.runbook, "sha256": RUN.sha256},
        data={"status": "rolled_back", "error": "switch: AssertionError: 503", "bench_id": str(i)},
    )


async def measure(
    url: str, receiver: Receiver, events: int, interval: float, burst: bool
) -> dict[str, Any]:
    failures: list[str] = []
    service = NotificationService(
        Plugins(defaults=("runbook.notify.console",)),  # notifiers only; slack via entry point
        [{"to": url, "on": ["run_failed"]}],
        on_failure=lambda m, u, e: failures.append(e),
    )
    submitted: dict[str, float] = {}
    async with service:
        for i in range(events):
            submitted[str(i)] = time.perf_counter()
            service.event(failed_run(i), RUN)
            if not burst:
                await asyncio.sleep(interval)
        await service.flush(30)
    latencies = sorted(
        (receiver.arrivals[k] - t) * 1000 for k, t in submitted.items() if k in receiver.arrivals
    )
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return {
        "events": events,
        "delivered": len(latencies),
        "failed": len(failures),
        "median_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(p99, 2),
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "mode": "burst" if burst else f"every {interval * 1000:g} ms",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--burst", action="store_true")
    args = parser.parse_args()
    receiver = Receiver()
    thread = threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"webhook+http://127.0.0.1:{receiver.server_address[1]}/hook?secret=bench-secret"
    try:
        result = asyncio.run(measure(url, receiver, args.events, args.interval, args.burst))
    finally:
        receiver.shutdown()
        receiver.server_close()
    ok = (result["median_ms"] or 1e9) < TARGET_MEDIAN_MS and result["p99_ms"] < TARGET_P99_MS
    result.update(
        target_median_ms=TARGET_MEDIAN_MS,
        target_p99_ms=TARGET_P99_MS,
        meets_target=ok and result["delivered"] == result["events"],
        python=platform.python_version(),
        machine=platform.machine(),
    )
    print(f"notification latency, webhook+http on 127.0.0.1, {result['mode']}")
    print(f"{'events':>8} {'delivered':>10} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}  target")
    print(
        f"{result['events']:>8} {result['delivered']:>10} {result['median_ms']:>10} "
        f"{result['p99_ms']:>8} {result['max_ms']:>8}  "
        f"{'met' if result['meets_target'] else 'MISSED'} (<{TARGET_MEDIAN_MS:g} ms median, "
        f"<{TARGET_P99_MS:g} ms p99)"
    )
    print(json.dumps({"bench": "notify", **result}))


if __name__ == "__main__":
    main()
