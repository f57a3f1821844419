"""A process writing to a shared SQLite run store, for tests/store/test_sqlite.py.

Usage: python store_worker.py DB_PATH WORKER RUNS. Prints "ready" once the store is open, waits for
a line on stdin so that every worker starts writing at the same moment, then writes 4 records per
run (create_run, save_step, add_approval, update_run) and prints "done".
"""

from __future__ import annotations

import sys

from runbook.store.base import ApprovalRecord, RunRecord, StepRecord
from runbook.store.sqlite import SqliteStore


def main(path: str, worker: str, runs: int) -> None:
    store = SqliteStore(path)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(runs):
        run_id = f"w{worker}-{i}"
        store.create_run(RunRecord(run_id, "rb.py", "0" * 64, "dev", f"actor{worker}", "running"))
        store.save_step(StepRecord(run_id, "stage", "succeeded", output={"i": i}, attempts=1))
        store.add_approval(ApprovalRecord(run_id, "stage", "bob", "granted"))
        store.update_run(run_id, status="succeeded")
    store.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
