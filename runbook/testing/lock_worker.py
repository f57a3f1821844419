"""A separate process using a lock provider by URL, for a provider's multi-process tests.

Run as ``python -m runbook.testing.lock_worker MODE URL NAME OWNER ...`` (see
``runbook.testing.processes.ProcessGroup.module``).

Modes:
  contend URL NAME OWNER ROUNDS LOGFILE  -- take the lock ROUNDS times, logging enter/exit lines
  hold URL NAME OWNER LEASE              -- take the lock, print its token, then wait to be killed
  cycle URL NAME OWNER COUNT             -- acquire+release COUNT times, print each token
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from runbook.locks.base import Lease
from runbook.plugins import Plugins


def take(provider: Any, name: str, owner: str, deadline: float) -> Lease:
    while (lease := provider.acquire(name, owner, actor=owner, lease=10)) is None:
        if time.monotonic() > deadline:
            sys.exit("gave up waiting for the lock")
        time.sleep(0.002)
    return lease


def main(mode: str, url: str, name: str, owner: str, *rest: str) -> None:
    provider = Plugins().open("lock", url)
    deadline = time.monotonic() + 30
    if mode == "contend":
        rounds, logfile = int(rest[0]), rest[1]
        for _ in range(rounds):
            lease = take(provider, name, owner, deadline)
            with open(logfile, "a") as log:
                log.write(f"enter {owner} {lease.token}\n")
                log.flush()
                os.fsync(log.fileno())
            time.sleep(0.005)  # hold it long enough that the other process tries meanwhile
            with open(logfile, "a") as log:
                log.write(f"exit {owner} {lease.token}\n")
                log.flush()
                os.fsync(log.fileno())
            provider.release(lease)
    elif mode == "hold":
        lease = provider.acquire(name, owner, actor=owner, lease=float(rest[0]))
        print(json.dumps({"token": lease.token if lease else None}), flush=True)
        time.sleep(60)  # killed by the test long before this
    elif mode == "cycle":
        tokens = []
        for _ in range(int(rest[0])):
            lease = take(provider, name, owner, deadline)
            tokens.append(lease.token)
            provider.release(lease)
        print(json.dumps({"tokens": tokens}), flush=True)
    provider.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
