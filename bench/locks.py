"""Lock provider latency: one acquire + release of a free lock, per provider.

    .venv/bin/python bench/locks.py [-n 1000]

memory://, file:// and sqlite:// always run (in a temporary directory); redis:// and
postgresql:// run when their plugins are installed (``Plugins().providers("lock")``) and the
services answer (RUNBOOK_TEST_REDIS / RUNBOOK_TEST_POSTGRES, defaults on 127.0.0.1). Prints a
table, then one JSON line for tooling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from runbook.plugins import Plugins

SERVICES = {
    "redis": os.environ.get("RUNBOOK_TEST_REDIS", "redis://127.0.0.1:6379/0"),
    "postgresql": os.environ.get(
        "RUNBOOK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
    ),
}


def measure(provider: Any, n: int) -> list[float]:
    """Microseconds per acquire+release of one lock name, as runs reusing a lock see it."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    owner = f"run-{uuid.uuid4().hex[:8]}"
    samples = []
    for _ in range(n + max(10, n // 20)):  # the first rounds warm caches and connections up
        start = time.perf_counter_ns()
        lease = provider.acquire(name, owner, actor="bench", lease=30.0)
        if lease is None:
            raise RuntimeError(f"{provider.url}: a free lock was refused")
        provider.release(lease)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples[-n:]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="rounds per provider (default 1000)")
    args = parser.parse_args()

    plugins = Plugins()
    available = plugins.providers("lock")
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="runbook-bench-") as tmp:
        urls = {
            "memory": "memory://",
            "file": f"file://{Path(tmp) / 'locks'}",
            "sqlite": f"sqlite:///{Path(tmp) / 'runbook.db'}",
            **SERVICES,
        }
        for scheme, url in urls.items():
            if scheme not in available:
                skipped[scheme] = "plugin not installed"
                continue
            try:
                provider = plugins.open("lock", url)
                samples = measure(provider, args.n)
                provider.close()
            except Exception as exc:  # a service that is down is reported, not fatal
                skipped[scheme] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                continue
            results.append(
                {
                    "provider": f"{scheme}://",
                    "n": args.n,
                    "median_us": round(statistics.median(samples), 1),
                    "p99_us": round(percentile(samples, 0.99), 1),
                }
            )

    print(
        f"lock acquire+release latency, n={args.n} per provider "
        f"(python {platform.python_version()}, {os.cpu_count()} cpus)"
    )
    print(f"{'provider':<14}{'median µs':>12}{'p99 µs':>12}")
    for row in results:
        print(f"{row['provider']:<14}{row['median_us']:>12.1f}{row['p99_us']:>12.1f}")
    for scheme, why in skipped.items():
        print(f"{scheme + '://':<14}  skipped: {why}")
    print(json.dumps({"bench": "locks", "results": results, "skipped": skipped}))


if __name__ == "__main__":
    main()
