"""The examples in docs/notifications.md run as written, and the page covers the contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_python_example_runs(number: int) -> None:
    if "runbook_slack" in BLOCKS[number]:
        pytest.importorskip("runbook_slack")
    exec(compile(BLOCKS[number], f"{DOC}:block{number}", "exec"), {})


def test_defaults_placeholders_and_aliases_are_documented() -> None:
    from runbook.notify.rules import RULE_KEYS
    from runbook.notify.templates import ALIASES, DEFAULT_KINDS, PLACEHOLDERS

    text = DOC.read_text()
    names = [f"`{k}`" for k in [*DEFAULT_KINDS, *ALIASES, *RULE_KEYS]]
    names += ["`{" + p + "}`" for p in PLACEHOLDERS]
    assert [n for n in names if n not in text] == []
