"""Repository-wide test settings: keep the developer's own environment out of the tests."""

from __future__ import annotations

import os

import pytest

_LEAKY = (
    "RUNBOOK_STORE",
    "RUNBOOK_ACTOR",
    "RUNBOOK_CONFIG",
    "RUNBOOK_TRACE_HOOKS",
    "RUNBOOK_DEBUG",
)


@pytest.fixture(autouse=True)
def _clean_runbook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _LEAKY:
        if name in os.environ:
            monkeypatch.delenv(name)
