"""A step's error as the operator reads it: an exception group says what went wrong inside."""

from __future__ import annotations

import uuid
from pathlib import Path

from runbook import Runner
from runbook.errors import leaves
from runbook.media import error_text


def test_a_step_failing_in_a_task_group_says_the_exception_inside(tmp_path: Path) -> None:
    # It said "ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception)".
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "group.py"
    path.write_text(
        "import asyncio\nfrom runbook import step\n\n"
        "@step\nasync def fan():\n"
        "    async def bad(n):\n        raise ValueError(f'host {n} refused')\n"
        "    async with asyncio.TaskGroup() as tg:\n"
        "        tg.create_task(bad(1))\n        tg.create_task(bad(2))\n"
    )
    result = Runner(actor="t", store=f"memory://{uuid.uuid4().hex}").run(path)
    assert result.steps["fan"].error == "ValueError: host 1 refused (and 1 more)"


def test_leaves_of_nested_groups_and_of_a_plain_exception() -> None:
    inner = ExceptionGroup("inner", [KeyError("k"), OSError("disk")])
    group = ExceptionGroup("outer", [ValueError("v"), inner])
    assert [type(e) for e in leaves(group)] == [ValueError, KeyError, OSError]
    plain = RuntimeError("x")
    assert leaves(plain) == [plain]
    assert error_text(plain) == "RuntimeError: x"
    assert error_text(group) == "ValueError: v (and 2 more)"
