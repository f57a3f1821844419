"""Names that moved out of ``runbook.audit.events`` still import from there (plugins written
against the old paths), and are the same objects as at their new homes."""

from __future__ import annotations

import pytest

import runbook.audit.events as events
from runbook.audit import query, verify


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("AuditQuery", query),
        ("BadEvent", verify),
        ("Check", verify),
        ("VerifyReport", verify),
        ("verify_chain", verify),
    ],
)
def test_a_moved_name_imports_from_its_old_module(name, home) -> None:
    assert getattr(events, name) is getattr(home, name)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        events.nope  # noqa: B018


def test_the_old_import_statement_works() -> None:
    from runbook.audit.events import Check, VerifyReport, verify_chain  # noqa: F401

    assert verify_chain([]).ok
