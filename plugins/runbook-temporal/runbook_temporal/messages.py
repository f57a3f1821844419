"""What travels between the client, the workflow and the activities: plain, JSON-able dataclasses.

Everything here ends up in Temporal's history, so nothing here may hold a secret: parameters are
the run's public ones (secret values are masked; workers read secrets from their own
environment), and step outputs that contained a secret travel masked, as the run store keeps them.
"""

# No ``from __future__ import annotations`` here: Temporal's data converter reads these
# dataclasses' type hints on every payload, and real annotations spare it evaluating strings.
from dataclasses import dataclass, field
from typing import Any

WORKFLOW = "runbook-run"


@dataclass
class RunRef:
    """Enough for any worker to rebuild a run's context: the runbook, its env and its params."""

    run_id: str
    runbook: str  # path, relative to the project root when it is inside it
    sha256: str
    env: str
    actor: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Policy:
    """How the run was started as far as its gates care. The env's rules themselves (protection,
    approvers, groups, signers) are read by each worker from the project's configuration, for
    the run's env, as ``resume`` and ``approve`` read them for a local run."""

    yes: bool = False  # --yes: approve as the starting actor where the env's rules allow it


@dataclass
class RunInput:
    run: RunRef
    policy: Policy
    queue: str = "runbook"  # the default task queue (workflows, and steps without queue=)
    heartbeat: float = 10.0  # seconds without a heartbeat before a worker counts as dead
    max_parallel: int = 8
    # W3C trace context of the run span in the process that started it (``runbook.tracing``):
    # every step attempt's span is its child, whichever worker runs it.
    trace: dict[str, str] = field(default_factory=dict)


@dataclass
class ApprovalSpec:
    min: int = 1
    allow_self: bool = True
    approvers: list[str] = field(default_factory=list)


@dataclass
class ArgSpec:
    name: str
    source: str
    key: str
    has_default: bool = False


@dataclass
class StepSpec:
    """One step as the workflow needs it: the DAG and the options, never the function."""

    name: str
    kind: str
    deps: list[str]
    after: list[str]
    args: list[ArgSpec]
    when: list[ArgSpec] | None = None
    rollback: list[ArgSpec] | None = None
    reversible: bool = False
    retries: int = 0
    backoff: float = 1.0
    backoff_max: float = 300.0
    timeout: float | None = None
    required: bool = True
    idempotent: bool = False
    lock: str | None = None
    queue: str | None = None
    approval: ApprovalSpec | None = None
    wait: float = 0.0  # a declared pure wait (a bake): served by a durable timer


@dataclass
class Plan:
    """The runbook as collected by a worker, and the run lock it took."""

    steps: list[StepSpec]
    run_lock: str | None = None
    run_token: int | None = None


@dataclass
class Attempt:
    """Run one attempt of one step (an activity on the step's task queue)."""

    run: RunRef
    step: str
    attempt: int
    attempts: int
    inputs: dict[str, Any] = field(default_factory=dict)  # outputs of the steps it reads
    missing: list[str] = field(default_factory=list)  # inputs that were skipped: use defaults
    run_lock: str | None = None
    token: int | None = None  # the run lock's fencing token
    retry_delay: float = 0.0  # the backoff before the next attempt, if this one fails
    seq: int = 0  # completed_seq to store if it succeeds
    started_at: str | None = None  # first attempt's start (ISO), kept across attempts
    waited: float = 0.0  # seconds of the step's own clock waits already served durably
    check_when: bool = True
    trace: dict[str, str] = field(default_factory=dict)  # the run span's context (RunInput.trace)


@dataclass
class Outcome:
    status: str  # succeeded | failed | retry | skipped
    output: Any = None
    error: str | None = None
    reason: str | None = None
    started_at: str | None = None
    lease_lost: bool = False
    lock_held: bool = False  # a step lock held by another run
    duration: float | None = None


@dataclass
class Undo:
    """Run the rollback of one step."""

    run: RunRef
    step: str
    output: Any = None
    inputs: dict[str, Any] = field(default_factory=dict)
    token: int | None = None
    trace: dict[str, str] = field(default_factory=dict)


@dataclass
class GateCheck:
    """Ask the run's approval policy, in a worker, whether a gate may open."""

    run: RunRef
    step: str
    policy: Policy
    outputs: dict[str, Any] = field(default_factory=dict)  # what the gate's plan is built from
    requested: bool = False  # approval_requested already recorded for this wait


@dataclass
class GateVerdict:
    verdict: str  # granted | denied | pending
    granted: list[str] = field(default_factory=list)  # who approved so far (distinct)
    deadline: str | None = None  # ISO: when a pending gate expires (Approval(timeout=...))


@dataclass
class Expiry:
    """A gate whose deadline passed, as recorded by the ``runbook.expire`` activity."""

    action: str  # deny | fail | none (the gate was no longer waiting: nothing recorded)
    reason: str = ""


@dataclass
class Event:
    kind: str
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None


@dataclass
class StepState:
    name: str
    status: str
    reason: str | None = None
    error: str | None = None
    attempts: int = 0
    duration: float | None = None
    rollback: str | None = None  # its own rollback's outcome: rolled_back | rollback_failed


@dataclass
class Record:
    """Durable writes the workflow itself decides on: run status, step rows, audit events."""

    run: RunRef
    events: list[Event] = field(default_factory=list)
    steps: list[StepState] = field(default_factory=list)
    status: str | None = None
    error: str | None = None
    release: list[str] = field(default_factory=list)  # locks to release (the run's end)


@dataclass
class Decision:
    """A human decision, sent to the run as a Temporal update. ``approved``/``denied``: recorded
    in the store by runbook's ``Decisions``, the gate asks the policy again; ``retry``/``skip``:
    the choice for an interrupted step; ``cancel``."""

    kind: str
    actor: str
    step: str | None = None


@dataclass
class Progress:
    """What a follower sees: the run's status and each step's, from a query."""

    status: str
    steps: dict[str, StepState] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    error: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    lock_denied: str | None = None
    finished: bool = False
    stopping: bool = False  # failing or cancelled: nothing new starts, rollbacks follow
