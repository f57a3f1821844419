"""A separate process appending to a PostgreSQL audit sink: ``audit_worker.py URL NAME COUNT``."""

from __future__ import annotations

import sys

from runbook.audit.events import AuditEvent
from runbook.plugins import Plugins


def main(url: str, name: str, count: str) -> None:
    sink = Plugins().open("audit", url)
    for i in range(int(count)):
        sink.append(
            AuditEvent(
                "step_succeeded",
                run_id=name,
                step=f"s{i}",
                actor=name,
                at="2026-01-01T00:00:00+00:00",
                data={"i": i},
            )
        )
    sink.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
