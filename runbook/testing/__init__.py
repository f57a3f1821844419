"""Test helpers: fakes for every outside effect, and the pytest plugin that provides them.

A runbook's own test suite uses the fixtures (``runbook_runner``, ``fake_shell``, ``fake_clock``,
``fake_router``, ``fake_notifier``) that the ``pytest11`` entry point registers automatically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.testing.fakes import FakeClock, FakeNotifier, FakeShell
from runbook.testing.plugin import RunbookRunner

if TYPE_CHECKING:  # imported on first use below (they pull in more than most tests need)
    from runbook.testing.router import FakeRouter
    from runbook.testing.ssh import FakeSSH


def __getattr__(name: str) -> Any:
    if name == "FakeSSH":
        from runbook.testing.ssh import FakeSSH

        return FakeSSH
    if name == "FakeRouter":
        from runbook.testing.router import FakeRouter

        return FakeRouter
    raise AttributeError(name)


__all__ = ["FakeClock", "FakeNotifier", "FakeRouter", "FakeSSH", "FakeShell", "RunbookRunner"]
