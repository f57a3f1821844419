"""The examples in docs/analysis.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_python_example_runs(number: int) -> None:
    exec(compile(BLOCKS[number], f"{DOC}:block{number}", "exec"), {})


def test_the_documented_reason_is_the_one_the_gate_gives() -> None:
    from runbook.strategies.canary import gate_reason

    verdict = {
        "reason": "2 of 2 measurements inconclusive (limit 1)",
        "measurements": [{"value": None, "detail": "no data"}] * 2,
    }
    text = gate_reason("canary analysis prometheus('canary_error_ratio') for web at 10%", verdict)
    assert " ".join(text.split()) in " ".join(DOC.read_text().split())
