"""runbook.assembly: one run built from a runner. What the run-level tests do not reach."""

from __future__ import annotations

import pytest

from runbook.assembly import _running
from runbook.errors import RunbookError


def test_a_lock_callback_after_its_run_is_over_is_refused_by_name():
    """The lock manager's callbacks (lease lost, waiting) find the run's execution through the
    run's holder, which is cleared when the run ends: one arriving later is a bug, said as such
    instead of a KeyError."""
    with pytest.raises(RunbookError, match="a lock callback came after its run was over"):
        _running({})
