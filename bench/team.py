"""Team backends side by side: per-operation latency, and per-step overhead of a whole run.

    .venv/bin/python bench/team.py [-n 500] [--steps 1000] [--no-e2e]

Operations (median and p99 in µs, after a warm-up; "floor: 1 commit" is one plain committed
INSERT, the fsync every durable PostgreSQL write pays, for scale):
  store.save_step       one upsert of a step's state (what the engine does twice per step)
  audit.append          one chained, durable audit event
  lock.acquire+release  one free lock taken and given back
for memory://, the SQLite-backed built-ins (sqlite://, jsonl://, file://) and the team backends
(postgresql://, redis://). A scheme whose provider is not installed, or whose service does not
answer (RUNBOOK_TEST_POSTGRES / RUNBOOK_TEST_REDIS, defaults on 127.0.0.1), is listed as skipped.

End to end: a generated linear runbook of --steps no-op steps run by ``Runner`` with the store and
the audit on memory, SQLite and PostgreSQL; per-step overhead = wall time / steps. PostgreSQL data
goes to a throw-away schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook.audit.events import AuditEvent
from runbook.plugins import Plugins
from runbook.store.base import RunRecord, StepRecord

PG = os.environ.get("RUNBOOK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("RUNBOOK_TEST_REDIS", "redis://127.0.0.1:6379/0")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(op: Callable[[int], None], n: int) -> list[float]:
    """Microseconds per call of ``op(i)``; the first calls warm connections and caches up."""
    warm = max(10, n // 20)
    samples = []
    for i in range(n + warm):
        start = time.perf_counter_ns()
        op(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples[warm:]


def save_step_op(store: Any) -> Callable[[int], None]:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    store.create_run(RunRecord(run_id, "bench.py", "0" * 64, "bench", "bench", "running"))
    now = datetime.now(UTC)

    def op(i: int) -> None:
        store.save_step(
            StepRecord(
                run_id,
                f"s{i % 50}",
                "succeeded",
                output={"i": i},
                attempts=1,
                started_at=now,
                finished_at=now,
                duration=0.0,
            )
        )

    return op


def append_op(sink: Any) -> Callable[[int], None]:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"

    def op(i: int) -> None:
        sink.append(
            AuditEvent(
                "step_succeeded",
                run_id,
                {"path": "bench.py", "sha256": "0"},
                step=f"s{i}",
                actor="bench",
                host="bench",
                env="bench",
                at=datetime.now(UTC).isoformat(),
                data={"duration_ms": 0},
            )
        )

    return op


def lock_op(provider: Any) -> Callable[[int], None]:
    name, owner = f"bench-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"

    def op(i: int) -> None:
        lease = provider.acquire(name, owner, actor="bench", lease=30.0)
        if lease is None:
            raise RuntimeError(f"{provider.url}: a free lock was refused")
        provider.release(lease)

    return op


@contextmanager
def pg_schema() -> Iterator[str | None]:
    """A throw-away schema name, or None when PostgreSQL is not reachable/installed."""
    try:
        import psycopg
    except ImportError:
        yield None
        return
    name = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        psycopg.connect(PG, connect_timeout=3).close()
    except psycopg.Error:
        yield None
        return
    try:
        yield name
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def with_option(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


class CommitFloor:
    """One committed single-row INSERT over a plain connection: the disk's fsync, the floor under
    every durable PostgreSQL operation above, so the table shows what runbook adds on top."""

    def __init__(self, schema: str) -> None:
        import psycopg

        self.url = PG
        self._conn = psycopg.connect(PG, autocommit=True)
        self._table = f'"{schema}".bench_commit_floor'
        self._conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        self._conn.execute(f"CREATE TABLE {self._table} (i integer)")

    def op(self, i: int) -> None:
        self._conn.execute(f"INSERT INTO {self._table} VALUES (%s)", (i,))

    def close(self) -> None:
        self._conn.close()


def micro(plugins: Plugins, tmp: Path, schema: str | None, n: int) -> tuple[list, dict]:
    pg = with_option(PG, "schema", schema) if schema else None
    redis = with_option(REDIS, "prefix", f"bench-{uuid.uuid4().hex[:8]}:")
    plan: list[tuple[str, str, str | None, Callable[[Any], Callable[[int], None]]]] = [
        ("store.save_step", "store", "memory://", save_step_op),
        ("store.save_step", "store", f"sqlite:///{tmp / 'store.db'}", save_step_op),
        ("store.save_step", "store", pg, save_step_op),
        ("audit.append", "audit", "memory://", append_op),
        ("audit.append", "audit", f"jsonl://{tmp / 'audit.jsonl'}", append_op),
        ("audit.append", "audit", f"sqlite:///{tmp / 'audit.db'}", append_op),
        ("audit.append", "audit", pg, append_op),
        ("lock.acquire+release", "lock", "memory://", lock_op),
        ("lock.acquire+release", "lock", f"file://{tmp / 'locks'}", lock_op),
        ("lock.acquire+release", "lock", f"sqlite:///{tmp / 'locks.db'}", lock_op),
        ("lock.acquire+release", "lock", pg, lock_op),
        ("lock.acquire+release", "lock", redis, lock_op),
    ]
    rows, skipped = [], {}
    if schema:
        floor = CommitFloor(schema)
        samples = timed(floor.op, n)
        floor.close()
        rows.append(
            {
                "operation": "floor: 1 commit",
                "backend": "postgresql://",
                "n": n,
                "median_us": round(statistics.median(samples), 1),
                "p99_us": round(percentile(samples, 0.99), 1),
            }
        )
    for operation, kind, url, make in plan:
        scheme = "postgresql" if url is None else url.split("://")[0]
        key = f"{operation} {scheme}://"
        if url is None:
            skipped[key] = "PostgreSQL not reachable (or psycopg not installed)"
            continue
        if scheme not in plugins.providers(kind):
            skipped[key] = "provider not installed"
            continue
        try:
            provider = plugins.open(kind, url)
            try:
                samples = timed(make(provider), n)
            finally:
                provider.close()
        except Exception as exc:  # a service that is down is reported, not fatal
            skipped[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
            continue
        rows.append(
            {
                "operation": operation,
                "backend": f"{scheme}://",
                "n": n,
                "median_us": round(statistics.median(samples), 1),
                "p99_us": round(percentile(samples, 0.99), 1),
            }
        )
    drop_redis_prefix(redis)
    return rows, skipped


def drop_redis_prefix(url: str) -> None:
    """Token counters never expire (by design): remove this run's keys explicitly."""
    try:
        import redis as redis_py
    except ImportError:
        return
    prefix = url.rsplit("prefix=", 1)[1]
    try:
        client = redis_py.Redis.from_url(url.split("?", 1)[0], socket_connect_timeout=2)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    except redis_py.RedisError:
        pass


def end_to_end(tmp: Path, schema: str | None, steps: int) -> tuple[list, dict]:
    try:
        from runbook import Runner, load
    except ImportError as exc:
        return [], {"e2e": f"runbook.Runner not available: {exc}"}
    path = tmp / f"linear_{steps}.py"
    lines = ["from runbook import step", ""]
    for i in range(steps):
        lines += ["@step", f"def s{i}({f's{i - 1}' if i else ''}):", "    return None", ""]
    path.write_text("\n".join(lines))
    rb = load(path)
    backends: dict[str, tuple[str, str] | None] = {
        "memory": ("memory://", "memory://"),
        "sqlite": (f"sqlite:///{tmp / 'e2e.db'}", f"sqlite:///{tmp / 'e2e-audit.db'}"),
        "postgresql": ((with_option(PG, "schema", schema),) * 2) if schema else None,
    }
    rows, skipped = [], {}
    for name, urls in backends.items():
        if urls is None:
            skipped[f"e2e {name}"] = "PostgreSQL not reachable"
            continue
        store, audit = urls
        try:
            runner = Runner(store=store, audit=[audit], locks="memory://", actor="bench")
            start = time.perf_counter()
            result = runner.run(rb)
            elapsed = time.perf_counter() - start
        except Exception as exc:
            skipped[f"e2e {name}"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
            continue
        if result.status != "succeeded":
            skipped[f"e2e {name}"] = f"run ended {result.status}"
            continue
        rows.append(
            {
                "backend": name,
                "steps": steps,
                "total_s": round(elapsed, 3),
                "per_step_us": round(elapsed / steps * 1e6, 1),
            }
        )
    return rows, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="calls per operation (default 500)")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the e2e runbook")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end runs")
    args = parser.parse_args()

    plugins = Plugins()
    with tempfile.TemporaryDirectory(prefix="runbook-bench-") as tmp_name, pg_schema() as schema:
        tmp = Path(tmp_name)
        rows, skipped = micro(plugins, tmp, schema, args.n)
        e2e, e2e_skipped = ([], {}) if args.no_e2e else end_to_end(tmp, schema, args.steps)
    skipped.update(e2e_skipped)

    print(
        f"team backends, n={args.n} per operation "
        f"(python {platform.python_version()}, {os.cpu_count()} cpus)"
    )
    print(f"{'operation':<22}{'backend':<14}{'median µs':>11}{'p99 µs':>11}")
    for r in rows:
        print(f"{r['operation']:<22}{r['backend']:<14}{r['median_us']:>11.1f}{r['p99_us']:>11.1f}")
    if e2e:
        print(f"\nlinear {args.steps}-step no-op run, store + audit on the backend")
        print(f"{'backend':<14}{'total s':>10}{'µs/step':>11}")
        for r in e2e:
            print(f"{r['backend']:<14}{r['total_s']:>10.3f}{r['per_step_us']:>11.1f}")
    for key, why in skipped.items():
        print(f"skipped {key}: {why}")
    print(
        json.dumps({"bench": "team", "n": args.n, "results": rows, "e2e": e2e, "skipped": skipped})
    )


if __name__ == "__main__":
    main()
