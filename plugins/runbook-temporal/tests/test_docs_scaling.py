"""docs/scaling.md stays true: its runbook runs unchanged locally, and its options are real."""

from __future__ import annotations

import re
from pathlib import Path

from runbook_temporal.spec import plan_of
from runbook_temporal.url import _KNOWN

from runbook import load

DOC = (Path(__file__).resolve().parents[3] / "docs" / "scaling.md").read_text()


def test_the_pages_runbook_runs_locally_unchanged(tmp_path: Path, runbook_runner) -> None:
    ((name, body),) = re.findall(r"```python\n# runbook: (\S+\.py)\n(.*?)```", DOC, re.S)
    path = tmp_path / name
    path.write_text(body)
    result = runbook_runner.run(path, runner={"protection": "none"})
    assert result.status == "succeeded", result.error
    assert runbook_runner.shell.ran("dbctl migrate --to 2.1")
    queues = {s.name: s.queue for s in plan_of(load(path)).steps}
    assert queues == {"plan": None, "migrate": "db", "roll": None}


def test_the_url_options_named_are_the_ones_parsed() -> None:
    paragraph = DOC[DOC.index("`executor` URL options") :].split("\n\n")[0]
    assert set(re.findall(r"`(\w+)` \(", paragraph)) == set(_KNOWN)
