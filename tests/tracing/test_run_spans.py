"""A real run's span tree: one run span, one child per step attempt, the trace passed on."""

from __future__ import annotations

import textwrap
from pathlib import Path

from runbook import Runner, load

RUNBOOK = """
from runbook import step

@step
def stage(shell):
    return shell(["sh", "-c", "echo $TRACEPARENT"]).stdout.strip()

@step(retries=1, backoff=0.001)
def switch(stage):
    import pathlib
    marker = pathlib.Path(__file__).with_name("tried")
    if not marker.exists():
        marker.write_text("once")
        raise RuntimeError("router busy")
    return "switched"
"""


def test_a_run_is_a_span_with_a_child_per_attempt_and_commands_join_the_trace(
    spans, tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "deploy_web.py"
    path.write_text(textwrap.dedent(RUNBOOK))
    result = Runner(env="prod", protection="none", entry_points=False).run(load(path))
    assert result.status == "succeeded"

    finished = spans.get_finished_spans()
    (run,) = [s for s in finished if s.name == "runbook.run"]
    steps = [s for s in finished if s.name == "runbook.step"]
    assert run.attributes["runbook.run_id"] == result.run_id
    assert run.attributes["runbook.status"] == "succeeded"
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in steps)
    by_attempt = sorted(
        (
            s.attributes["runbook.step"],
            s.attributes["runbook.attempt"],
            s.attributes["runbook.status"],
        )
        for s in steps
    )
    assert by_attempt == [
        ("stage", 1, "succeeded"),
        ("switch", 1, "failed"),
        ("switch", 2, "succeeded"),
    ]
    (stage,) = [s for s in steps if s.attributes["runbook.step"] == "stage"]
    traceparent = result.steps["stage"].output
    assert traceparent.split("-")[1] == format(run.context.trace_id, "032x")
    assert traceparent.split("-")[2] == format(stage.context.span_id, "016x")
