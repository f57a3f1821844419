"""A separate process running a runbook on PostgreSQL store + audit (one database):
``run_worker.py URL RUNBOOK ACTOR``. It says ``ready`` once its providers are open, then waits for
the test's advisory-lock gate, so that the processes' runs overlap."""

from __future__ import annotations

import sys

import psycopg
from runbook_postgres._db import PgTarget

from runbook import Runner


def main(url: str, runbook: str, actor: str) -> None:
    runner = Runner(store=url, audit=[url], locks=None, actor=actor)
    runner.store  # noqa: B018 - opened (and migrated) before the gate
    runner.sinks  # noqa: B018
    target = PgTarget.parse(url, "store")
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        print("ready", flush=True)
        conn.execute(
            "SELECT pg_advisory_lock_shared(hashtext('runbook-test-gate'), hashtext(%s))",
            (target.schema,),
        )
    result = runner.run(runbook)
    print(result.status, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
