"""What a step knows about its run: ``RunInfo`` (for plugins) and ``Ctx`` (the ``ctx`` resource)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from runbook.params import Params

# The step whose code is running in this task or worker thread (contextvars follow both).
CURRENT_STEP: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "runbook_step", default=None
)
# The fencing token of the lock protecting the current step (its own lock, else the run lock).
FENCING_TOKEN: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "runbook_fencing", default=None
)


@dataclass(frozen=True)
class RunInfo:
    """A plugin's view of a run; secrets already redacted from ``params``."""

    run_id: str
    runbook: str  # path
    name: str  # the runbook's module name
    sha256: str
    env: str
    actor: str
    params: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    resumed: bool = False
    # "signed" where the env has ``signers``; "claimed" in a strict env without (DESIGN 11).
    identity: str = ""


class Ctx:
    """The ``ctx`` resource: the run's identity and the few actions that belong to the run."""

    def __init__(
        self,
        info: RunInfo,
        params: Params,
        *,
        record: Callable[..., Any],
        progress: Callable[[str | None, str, float | None], None],
        redact: Callable[[Any], Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        protection: str = "standard",
        config: Any = None,
    ) -> None:
        self.info = info
        self.params = params
        self._record = record
        self._progress = progress
        self.redact = redact or (lambda value: value)
        # Read-only view of the outputs of the steps finished so far (the shell's trap check
        # needs them: they are values from outside the runbook's source).
        self.outputs: Mapping[str, Any] = MappingProxyType(outputs if outputs is not None else {})
        self.protection = protection  # the env's level: "none" | "standard" | "strict"
        self.config = config  # the project configuration, None when run from Python without one

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def runbook(self) -> str:
        return self.info.runbook

    @property
    def env(self) -> str:
        return self.info.env

    @property
    def actor(self) -> str:
        return self.info.actor

    @property
    def dry_run(self) -> bool:
        return self.info.dry_run

    @property
    def step(self) -> str | None:
        return CURRENT_STEP.get()

    @property
    def fencing_token(self) -> int | None:
        """Pass this to the system you change so it can refuse writes from a stale lock holder."""
        return FENCING_TOKEN.get()

    def record_change(self, target: str, before: Any, after: Any) -> None:
        """Record what this step changed (``change_recorded``), before/after, in the audit trail."""
        self._record(
            "change_recorded",
            CURRENT_STEP.get(),
            {"target": target, "before": before, "after": after},
        )

    def record_measurement(self, data: dict[str, Any]) -> None:
        """Record one analysis measurement (``analysis_measured``: query, value, outcome...)."""
        self._record("analysis_measured", CURRENT_STEP.get(), dict(data))

    def progress(self, message: str, fraction: float | None = None) -> None:
        """Report progress on a long wait; shown by the terminal, passed to plugins (masked)."""
        self._progress(CURRENT_STEP.get(), self.redact(str(message)), fraction)

    def audit(self, kind: str, data: dict[str, Any]) -> None:
        """Record an audit event for the current step (built-in resources: ``unsafe_command``)."""
        self._record(kind, CURRENT_STEP.get(), data)

    def __repr__(self) -> str:
        return f"Ctx(run_id={self.run_id!r}, env={self.env!r}, actor={self.actor!r})"
