"""What a run returns: ``RunResult`` and a ``StepResult`` per step (statuses of DESIGN.md 2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from runbook import errors

# Run statuses (public contract).
SUCCEEDED = "succeeded"
FAILED = "failed"
ROLLED_BACK = "rolled_back"
ROLLBACK_FAILED = "rollback_failed"
PAUSED = "paused"
CANCELLED = "cancelled"
RUNNING = "running"  # only ever seen in the store, while a run is live or after its process died
RUN_STATUSES = (SUCCEEDED, FAILED, ROLLED_BACK, ROLLBACK_FAILED, PAUSED, CANCELLED, RUNNING)

# Step statuses.
PENDING = "pending"
STEP_RUNNING = "running"
STEP_SUCCEEDED = "succeeded"
STEP_FAILED = "failed"
SKIPPED = "skipped"
AWAITING_APPROVAL = "awaiting_approval"
STEP_ROLLED_BACK = "rolled_back"
STEP_ROLLBACK_FAILED = "rollback_failed"
STEP_CANCELLED = "cancelled"
DENIED = "denied"
PLANNED = "planned"  # --dry-run: would run
# Every status a stored step row may hold; anything else is a corrupt store.
STEP_STATUSES = (
    PENDING,
    STEP_RUNNING,
    STEP_SUCCEEDED,
    STEP_FAILED,
    SKIPPED,
    AWAITING_APPROVAL,
    STEP_ROLLED_BACK,
    STEP_ROLLBACK_FAILED,
    STEP_CANCELLED,
    DENIED,
    PLANNED,
)

# Statuses after which a step's dependents may run.
DONE_STATUSES = frozenset({STEP_SUCCEEDED, SKIPPED})

# ``StepResult.rollback``: how the step's own rollback went (None: it had none, or none ran).
# ``running`` is only ever seen in the store, when the process died during that rollback.
ROLLBACK_RUNNING = "running"
ROLLBACK_OUTCOMES = (STEP_ROLLED_BACK, STEP_ROLLBACK_FAILED)
ROLLBACK_STATES = (None, ROLLBACK_RUNNING, *ROLLBACK_OUTCOMES)

EXIT_CODES = {
    SUCCEEDED: errors.EXIT_OK,
    FAILED: errors.EXIT_FAILED,
    ROLLED_BACK: errors.EXIT_FAILED,
    ROLLBACK_FAILED: errors.EXIT_ROLLBACK_FAILED,
    PAUSED: errors.EXIT_PAUSED,
    CANCELLED: errors.EXIT_INTERRUPTED,
}


@dataclass
class StepResult:
    name: str
    status: str = PENDING
    output: Any = None
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: float | None = None
    reason: str | None = None  # why skipped / cancelled / awaiting
    rollback_error: str | None = None
    kind: str = "step"
    # The outcome of this step's own rollback: "rolled_back", "rollback_failed" or None. A failed
    # step keeps status "failed"; a succeeded step that was undone has status "rolled_back" too.
    rollback: str | None = None
    # Why it failed, masked (runbook.failure): the runbook line, a command's stderr tail, the
    # whole traceback; and what the step logged through ``log``.
    where: str | None = None
    stderr: str | None = None
    traceback: str | None = None
    log: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Finished without failing: ``succeeded``, or ``skipped`` (a ``when=`` that said no is
        a decision, not a failure)."""
        return self.status in DONE_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601): what ``--json`` and the run store show of a step."""
        data = asdict(self)
        for key in ("started_at", "finished_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data


@dataclass
class RunResult:
    run_id: str
    status: str
    runbook: str = ""
    env: str = ""
    actor: str = ""
    steps: dict[str, StepResult] = field(default_factory=dict)
    audit: list[Any] = field(default_factory=list)
    error: str | None = None  # the first required failure, for the summary line
    started_at: datetime | None = None
    finished_at: datetime | None = None
    dry_run: bool = False
    lock_denied: str | None = None  # a step lock held by another run ended this run
    # Masks secret values in ``to_dict()`` (what the CLI prints); outputs stay real in Python.
    redactor: Any = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        # Short on purpose: asyncio formats the run's task, and so its result, each time a run
        # ends (restoring its SIGINT handler); the full repr of 1,000 steps and their events
        # cost ~0.1 s per run.
        return (
            f"RunResult(run_id={self.run_id!r}, status={self.status!r}, "
            f"steps={len(self.steps)}, events={len(self.audit)}, error={self.error!r})"
        )

    @property
    def ok(self) -> bool:
        """Only ``succeeded``: a run that rolled back cleanly still did not do its job."""
        return self.status == SUCCEEDED

    @property
    def exit_code(self) -> int:
        """What ``runbook exec`` exits with, so scripts and CI can tell failed (1) from paused
        at a gate (3), a held lock (5) or a rollback that failed and needs a human (4)."""
        if self.lock_denied and self.status in (FAILED, ROLLED_BACK):
            return errors.EXIT_LOCKED
        return EXIT_CODES.get(self.status, errors.EXIT_FAILED)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; None while the run has not finished (paused, running)."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def hosts(self) -> dict[str, str]:
        """Each host's outcome (``succeeded``, ``failed``, ``rolled_back``, ``unreached``,
        ``skipped``...), from the run's per-host steps (``release.deploy[web-3]``)."""
        from runbook.fleet import host_states

        return host_states(self.steps, finished=self.status != PAUSED)

    def counts(self) -> dict[str, int]:
        """Steps per status (``{"succeeded": 4, "skipped": 1}``): the one-line summary."""
        out: dict[str, int] = {}
        for step in self.steps.values():
            out[step.status] = out.get(step.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready data, secrets masked in the values that carry data (outputs,
        errors, audit data), never in runbook's own keys and vocabulary."""
        data = self._to_dict()
        mask = self.redactor
        if not mask:
            return data
        data["error"], data["lock_denied"] = mask(data["error"]), mask(data["lock_denied"])
        data["steps"] = {name: mask.fields(step) for name, step in data["steps"].items()}
        data["audit"] = [
            {**event, "data": mask.fields(event.get("data") or {})}
            if isinstance(event, dict)
            else event
            for event in data["audit"]
        ]
        return data

    def _to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "runbook": self.runbook,
            "env": self.env,
            "actor": self.actor,
            "dry_run": self.dry_run,
            "lock_denied": self.lock_denied,
            "error": self.error,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration": self.duration,
            "steps": {name: s.to_dict() for name, s in self.steps.items()},
            "hosts": self.hosts,
            "audit": [e.to_dict() if hasattr(e, "to_dict") else e for e in self.audit],
        }
