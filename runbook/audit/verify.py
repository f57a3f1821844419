"""Running a verification: a sink's chain plus the checks, in one pass, whatever the sink.

A sink's ``verify(checks)`` re-computes its chain with the checks seeing every event (and adds
what only it can see: garbled lines, edited columns). A third-party sink written before checks
existed takes no argument: its own ``verify()`` runs first, then the checks over ``events()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from runbook.audit.checks import WitnessCheck
from runbook.audit.events import Check, VerifyReport, verify_chain


def _takes_checks(method: Any) -> bool:
    try:
        return "checks" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def verify_sink(sink: Any, checks: Sequence[Check] = ()) -> VerifyReport:
    if _takes_checks(sink.verify):
        return sink.verify(checks)
    report: VerifyReport = sink.verify()
    if not report.ok or not checks:
        return report
    return verify_chain(sink.events(None), checks)


def witness_check(store: Any, chain: str, *, empty_why: str = "") -> WitnessCheck | None:
    """The store's witness of ``chain``, or None when the store keeps none (an older plugin).

    The store's run ids are read too, so an empty trail next to a store that has runs but no
    witness (runs recorded before witnessing existed) is still reported as missing events.
    """
    read = getattr(store, "audit_witnesses", None)
    if read is None:
        return None
    witnesses = read(chain)
    runs = [r.run_id for r in store.list_runs(limit=3)]
    return WitnessCheck(witnesses, store_runs=runs, empty_why=empty_why)
