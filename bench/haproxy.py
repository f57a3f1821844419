"""HAProxy router cost and accuracy on this machine, against a real /usr/sbin/haproxy.

    .venv/bin/python bench/haproxy.py [--rounds 200] [--requests 1000]

Starts HAProxy with two local HTTP backends (the integration tests' helpers), then measures:

* ``get weight`` alone: one bare runtime API round trip, the baseline;
* ``weights()``: ``show servers state`` parsed;
* ``set_weights()``: validation, the write, and the read-back that makes it trustworthy;
* the traffic split at 20/80 over ``--requests`` requests through HAProxy.

Prints a table, then the same numbers as one JSON line. HAProxy is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "plugins" / "runbook-haproxy" / "tests"))

from infra import Backend, HAProxy, split  # noqa: E402
from runbook_haproxy.router import HAProxyRouter  # noqa: E402


def timed(fn: Callable[[int], Any], rounds: int) -> dict[str, float]:
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    backends = {"stable": Backend("stable"), "canary": Backend("canary")}
    with tempfile.TemporaryDirectory() as tmp:
        proxy = HAProxy(Path(tmp), "web", backends, {"stable": 100, "canary": 0})
        try:
            router = HAProxyRouter(proxy.url)
            rows = {
                "get weight (baseline)": timed(
                    lambda _: router.api.execute("get weight web/canary"), args.rounds
                ),
                "weights()": timed(lambda _: router.weights("web"), args.rounds),
                "set_weights() + read-back": timed(
                    lambda i: router.set_weights(
                        "web", {"canary": i % 100, "stable": 100 - i % 100}
                    ),
                    args.rounds,
                ),
            }
            router.set_weights("web", {"canary": 20, "stable": 80})
            counts = split(proxy.port, args.requests)
        finally:
            proxy.stop()
            for backend in backends.values():
                backend.close()
    canary_share = 100 * counts.get("canary", 0) / args.requests
    print(f"{'operation':28} {'median ms':>10} {'p99 ms':>8}")
    for name, row in rows.items():
        print(f"{name:28} {row['median_ms']:>10.3f} {row['p99_ms']:>8.3f}")
    print(f"split at canary=20: {canary_share:.1f}% of {args.requests} requests to the canary")
    print(
        json.dumps(
            {
                "bench": "haproxy",
                "python": platform.python_version(),
                "rounds": args.rounds,
                "operations": rows,
                "requests": args.requests,
                "canary_share_pct": round(canary_share, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
