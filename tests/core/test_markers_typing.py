"""@step's options are typed: a misspelled or mistyped option is a type error in the editor."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pyright")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_misspelled_or_mistyped_step_option_is_a_type_error(tmp_path: Path) -> None:
    source = tmp_path / "typed_runbook.py"
    source.write_text(
        textwrap.dedent("""
        from runbook import Approval, probe, step

        @step(retris=3)
        def typo() -> int:
            return 1

        @step(retries="3")
        def wrong_type() -> int:
            return 1

        @step(retries=3, backoff=2, timeout=60, lock="db-{env}", after=[typo], tags="deploy")
        def fine(typo: int) -> int:
            return typo

        @step(approval=Approval(min=2), when=lambda: True)
        def gated() -> None: ...

        @probe
        def bare() -> str:
            return "x"

        reveal_type(fine)
        """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--pythonpath", sys.executable, str(source)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [
        line.split(" - ", 1)[0].strip() for line in proc.stdout.splitlines() if " error:" in line
    ]
    lines = source.read_text().splitlines()
    expected = [str(n) for n, line in enumerate(lines, 1) if "retris=3" in line or '"3"' in line]
    assert [e.rsplit(":", 2)[-2] for e in errors] == expected, proc.stdout
    assert 'Type of "fine" is "(typo: int) -> int"' in proc.stdout  # the function stays as it is
