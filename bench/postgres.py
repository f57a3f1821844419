"""PostgreSQL store + audit per chain step: commits COUNTED and time, against one bare commit.

A chain of N no-op steps (default 300) on ``postgresql://`` store and audit sink, three ways:

- **one database, joined**: the sink writes its events inside the store's transaction, so a
  step's start and the previous step's outcome (rows, events, witness) are one commit;
- **kept apart**: the sink's URL names the same server with one more libpq option, so it is
  another identity and keeps its own transactions (what two databases cost);
- **one commit per statement**: the store and sink without ``transaction``/``append_many``
  (hidden by a wrapper), which is how the plugin wrote before it joined the store's commit.

The floor is one bare PostgreSQL commit (an autocommit INSERT of one ~600-byte row, median of
300), measured before, between and after the cases on the same server; the fastest is kept.
Commits are counted twice: at the driver (pooled checkouts that wrote: each is one transaction)
and on the server (transaction ids assigned, server-wide, so other clients' writes add to it).

    .venv/bin/python bench/postgres.py                     # postgresql://postgres@127.0.0.1/test
    .venv/bin/python bench/postgres.py --n 100 --repeat 1 --url postgresql://...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import write_runbook

from runbook import Runner, load

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
FLOOR_SAMPLES = 300
_HIDDEN = frozenset({"transaction", "append_many", "shares_file_with"})
_WRITES = ("INSERT", "UPDATE", "DELETE")


class Statementwise:
    """A provider without the batching and joining methods: each write its own commit."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in _HIDDEN:
            raise AttributeError(name)
        return getattr(self.inner, name)


class Counts:
    def __init__(self) -> None:
        self.commits = 0


@contextmanager
def counting() -> Iterator[Counts]:
    """Pooled checkouts that ran an INSERT, UPDATE or DELETE (one transaction each)."""
    counts = Counts()
    real_connection = psycopg_pool.ConnectionPool.connection
    real_execute, real_many = psycopg.Cursor.execute, psycopg.Cursor.executemany
    wrote: set[int] = set()

    def note(cur: Any, query: Any) -> None:
        text = query.as_string(cur.connection) if isinstance(query, sql.Composable) else str(query)
        if text.lstrip().upper().startswith(_WRITES):
            wrote.add(id(cur.connection))

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        note(self, query)
        return real_execute(self, query, *args, **kwargs)

    def executemany(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        note(self, query)
        return real_many(self, query, *args, **kwargs)

    @contextmanager
    def connection(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with real_connection(self, *args, **kwargs) as conn:
            wrote.discard(id(conn))
            try:
                yield conn
            finally:
                if id(conn) in wrote:
                    wrote.discard(id(conn))
                    counts.commits += 1

    psycopg.Cursor.execute, psycopg.Cursor.executemany = execute, executemany  # type: ignore[method-assign]
    psycopg_pool.ConnectionPool.connection = connection  # type: ignore[method-assign,assignment]
    try:
        yield counts
    finally:
        psycopg.Cursor.execute, psycopg.Cursor.executemany = real_execute, real_many  # type: ignore[method-assign]
        psycopg_pool.ConnectionPool.connection = real_connection  # type: ignore[method-assign]


def next_xid(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return int(row[0])


def floor_commit(url: str, schema: str, samples: int = FLOOR_SAMPLES) -> float:
    """Seconds for one autocommit INSERT of one small row: one round trip, one WAL flush."""
    table = sql.Identifier(schema, "floor")
    with psycopg.connect(url, autocommit=True) as conn:
        create = sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigserial, body text)")
        conn.execute(create.format(table))
        insert = sql.SQL("INSERT INTO {} (body) VALUES (%s)").format(table)
        body = "x" * 600
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            conn.execute(insert, (body,))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def cases(url: str, schema: str) -> dict[str, Callable[[str], tuple[Any, Any]]]:
    """Label -> a function of a fresh tag giving (store, sink) in their own schema."""
    from runbook_postgres.audit import PostgresSink
    from runbook_postgres.store import PostgresStore

    def at(tag: str) -> str:
        return f"{url}{'&' if '?' in url else '?'}schema={schema}_{tag}"

    return {
        "one database, joined": lambda tag: (PostgresStore(at(tag)), PostgresSink(at(tag))),
        "kept apart (another identity)": lambda tag: (
            PostgresStore(at(tag)),
            PostgresSink(f"{at(tag)}&keepalives=1"),
        ),
        "one commit per statement (before)": lambda tag: (
            Statementwise(PostgresStore(at(tag))),
            Statementwise(PostgresSink(at(tag))),
        ),
    }


def run_once(rb: Any, providers: tuple[Any, Any]) -> float:
    store, sink = providers
    runner = Runner(store=store, audit=[sink], locks=None, notify=(), actor="bench")
    runner.sinks  # noqa: B018 - wrapped before the clock starts
    start = time.perf_counter()
    result = runner.run(rb)
    elapsed = time.perf_counter() - start
    assert result.status == "succeeded", result.error
    return elapsed


def close(providers: tuple[Any, Any]) -> None:
    for provider in providers:
        provider.close()


def measure(
    url: str, rb: Any, steps: int, make: Callable[[str], tuple[Any, Any]], tag: str, repeat: int
) -> dict[str, Any]:
    times = []
    for i in range(repeat):
        providers = make(f"{tag}t{i}")
        try:
            run_once(rb, providers)  # warm: pools filled, plans cached
            times.append(run_once(rb, providers) / steps)
        finally:
            close(providers)
    providers = make(f"{tag}c")
    try:
        run_once(rb, providers)
        xid = next_xid(url)
        with counting() as counts:
            run_once(rb, providers)
        xids = next_xid(url) - xid - 1  # the second next_xid's own snapshot assigns none
    finally:
        close(providers)
    return {
        "per_step_us": round(min(times) * 1e6, 1),
        "commits_per_step": round(counts.commits / steps, 2),
        "server_xids_per_step": round(max(xids, 0) / steps, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server (default {DEFAULT_URL})")
    parser.add_argument("--n", type=int, default=300, help="steps in the chain (default 300)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (best kept)")
    args = parser.parse_args()
    schema = f"rbbench_{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(prefix="runbook-bench-pg-") as tmp:
            rb = load(write_runbook(Path(tmp), args.n, "linear", "async"))
            with psycopg.connect(args.url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            floors = [floor_commit(args.url, schema)]
            rows: dict[str, dict[str, Any]] = {}
            for i, (label, make) in enumerate(cases(args.url, schema).items()):
                rows[label] = measure(args.url, rb, args.n, make, f"c{i}", args.repeat)
                floors.append(floor_commit(args.url, schema))
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            made = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
                (schema, f"{schema}\\_%"),
            ).fetchall()
            for (name,) in made:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
    floor = min(floors) * 1e6
    for row in rows.values():
        row["x_commit"] = round(row["per_step_us"] / floor, 2)
    print(
        f"floor: one bare PostgreSQL commit {floor:.1f} us (fastest of {len(floors)} medians of "
        f"{FLOOR_SAMPLES}, around the cases); chain of {args.n} no-op steps"
    )
    width = max(len(k) for k in rows) + 2
    print(f"{'store + audit':<{width}}{'us/step':>10}{'x commit':>10}{'commits':>9}{'xids':>7}")
    for label, row in rows.items():
        print(
            f"{label:<{width}}{row['per_step_us']:>10}{row['x_commit']:>10.2f}"
            f"{row['commits_per_step']:>9}{row['server_xids_per_step']:>7}"
        )
    print("(commits: counted at the driver; xids: assigned on the server, by anyone, per step)")
    print(
        json.dumps(
            {"bench": "postgres", "n": args.n, "floor_commit_us": round(floor, 1), "chain": rows}
        )
    )


if __name__ == "__main__":
    main()
