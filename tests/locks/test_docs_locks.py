"""The examples in docs/locks.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "locks.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(BLOCKS[index], f"{DOC}:block{index}", "exec"), {"__name__": f"doc_{index}"})
    if "SchemaRegistry" in BLOCKS[index]:
        assert capsys.readouterr().out == "stale lock holder (token 1 < 2)\n"


def test_the_runbook_example_takes_its_locks_and_passes_the_token(tmp_path: Path) -> None:
    from runbook import Runner, load

    (tmp_path / "migrate.py").write_text(BLOCKS[0], encoding="utf-8")
    commands: list[list[str]] = []
    runner = Runner(
        env="dev",
        params={"table": "orders"},
        resources={"shell": lambda command, **_: commands.append(command)},
        store="memory://",
        audit=["memory://"],
        locks=f"file://{tmp_path / 'locks'}",
        actor="alice",
    )
    result = runner.run(load(tmp_path / "migrate.py"))
    assert result.status == "succeeded"
    assert commands == [["backfill", "--table", "orders", "--fencing-token", "1"]]  # argv form
    locks = [(e.kind, e.data["lock"]) for e in result.audit if e.kind.startswith("lock_")]
    assert locks == [
        ("lock_acquired", "db-dev"),
        ("lock_acquired", "table-dev-orders"),
        ("lock_released", "table-dev-orders"),
        ("lock_released", "db-dev"),
    ]
