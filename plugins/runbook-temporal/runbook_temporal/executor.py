"""The ``temporal://`` executor as runbook opens it: a whole run handed to Temporal.

``local://`` runs one step attempt at a time inside the process that drives the run. A Temporal
run is driven by its workflow instead, so this executor takes the run as a whole: ``arun`` starts
it and (unless detached) follows it to its end or its first wait for a human.
"""

from __future__ import annotations

from typing import Any

from runbook.errors import UsageError
from runbook.result import RunResult
from runbook_temporal.client import TemporalRuns, to_result


class TemporalExecutor:
    """Runs whole runs on Temporal (``runs_remotely``); never a single in-process attempt."""

    runs_remotely = True

    def __init__(self, url: str) -> None:
        self.runs = TemporalRuns(url)
        self.url = str(self.runs.url)

    async def arun(
        self,
        runner: Any,
        rb: Any,
        *,
        params: dict[str, Any] | None = None,
        detach: bool = False,
        on_step: Any = None,
    ) -> RunResult:
        run_id = await self.runs.start(runner, rb, params)
        record = runner.store.get_run(run_id)
        if detach:
            return RunResult(
                run_id=run_id,
                status="running",
                runbook=record.runbook_path,
                env=record.env,
                actor=record.actor,
            )
        state = await self.runs.follow(run_id, on_step)
        return to_result(state, record, run_id)

    async def run(self, attempt: Any) -> Any:
        raise UsageError("temporal:// runs whole runs on its workers, not single step attempts")

    def still_running(self, step: str) -> bool:
        return False

    async def wait_stopped(self, step: str, timeout: float) -> bool:
        return True

    async def aclose(self) -> None:
        return None
