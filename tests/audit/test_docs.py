"""The examples in docs/audit.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_python_example_runs(number: int) -> None:
    exec(compile(BLOCKS[number], f"{DOC}:block{number}", "exec"), {})


def test_every_kind_is_documented() -> None:
    from runbook.audit import KINDS

    text = DOC.read_text()
    assert [k for k in KINDS if f"`{k}`" not in text] == []
