"""The coordinator: what a run does next, decided from plain data.

The coordinator holds the state of one run (a ``StepResult`` per step, the completion order of the
reversible steps, the failures, whether the run is failing or cancelled) and answers the driver's
questions. It does no I/O, never awaits, never reads a clock and draws no random numbers: the
same sequence of events always gives the same decisions. That is what lets one piece of code
decide a fresh run, a run resumed from the store (``restore``), and a Temporal workflow replaying
its history.

The API, for drivers (``runbook.engine`` and executor plugins such as ``runbook-temporal``)::

    c = Coordinator(runbook)                 # or Coordinator(runbook); c.restore(records, ...)
    c.start()                                # count inputs; what is ready now goes on the queue
    for name in c.take_ready(slots): ...     # steps that may start now (none once stopping)
    c.blocked_by(step.args)                  # None, or why the step must be skipped
    c.on_started(name, attempt)
    c.on_succeeded(name) -> seq              # releases dependents
    c.on_failed(name)                        # a required failure makes the run fail
    c.on_skipped / on_cancelled / on_planned / on_awaiting / on_denied
    c.should_retry(name, attempt, lease_lost=False) -> bool
    c.backoff(name, attempt, u) -> seconds   # u in [0, 1) from the driver's RNG
    c.fail_run() / c.cancel_run()            # a fatal error (store, audit), a cancellation
    c.begin_rollback(); c.next_rollback() -> name | None; c.on_rolled_back / on_rollback_failed
    c.status(dry_run=False) -> run status    # succeeded, failed, rolled_back, paused, ...

Statuses change only through these methods; the driver fills in the rest of a ``StepResult``
(output, error, timestamps) and writes it through the recorder.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from runbook import backoff as _backoff
from runbook import result as R
from runbook.collect import Arg, Runbook
from runbook.interruptions import CANCELLED, CUT_OFF, RERUN, RETRY, SKIP, rolling_back
from runbook.plan import probes_of
from runbook.redact import is_redacted
from runbook.result import StepResult

# A step's dependents may be considered once it reached one of these (they then run or skip).
DONE_LIKE = R.DONE_STATUSES | {R.STEP_FAILED, R.STEP_CANCELLED, R.PLANNED}


def _inputs_of(runbook: Runbook) -> dict[str, tuple[str, ...]]:
    """What each step waits for: its predecessors, and for a gate also every probe its plan
    holds (``plan.probes_of``). A probe re-run on resume may sit behind a step that is done;
    the gate waits for it, so its plan is checked against the probe's value now."""
    out = {}
    for name, step in runbook.steps.items():
        inputs = step.predecessors
        if step.options.approval is not None:
            inputs = (*inputs, *(p for p in probes_of(runbook, name) if p not in inputs))
        out[name] = inputs
    return out


class Coordinator:
    """State and decisions of one run over its DAG (see the module docstring)."""

    def __init__(self, runbook: Runbook) -> None:
        self.steps = runbook.steps
        self._inputs = _inputs_of(runbook)
        self._dependents: dict[str, list[str]] = {name: [] for name in self.steps}
        for name, inputs in self._inputs.items():
            for p in inputs:
                self._dependents[p].append(name)
        self.results: dict[str, StepResult] = {
            name: StepResult(name, kind=step.kind) for name, step in self.steps.items()
        }
        self.completed: list[str] = []  # reversible steps in order of completion
        self.failed: list[str] = []  # steps that failed (required) or were cut off mid-way
        self.failing = False
        self.cancelled = False
        self.seq = 0  # finish counter: stored with each step's row, the rollback order
        self.seqs: dict[str, int] = {}  # step -> its finish number
        self._waiting: dict[str, int] = {}
        self._ready: deque[str] = deque()
        self._released: set[str] = set()
        self._rollback: deque[str] | None = None

    # -- rebuilding from the store -------------------------------------------------------------

    def restore(
        self,
        records: Mapping[str, Any],
        outputs: dict[str, Any],
        *,
        decisions: Mapping[str, str] | None = None,
        cause: str | None = None,
    ) -> list[str]:
        """Load stored step records (``StepRecord``); return the steps whose state changed here.

        ``decisions``: what to do with each interrupted step or rollback
        (``runbook.interruptions``): ``rerun``/``retry`` run it again, ``skip`` treats it as not
        run, ``cut off`` ends an interrupted step of a run that was rolling back as cancelled.
        ``cause`` is the stored reason a rollback had begun (``failed``/``cancelled``): the run
        goes on rolling back.
        ``outputs`` receives the outputs of the succeeded steps that do not run again.
        """
        decisions = decisions or {}
        changed = []
        for name, rec in records.items():
            res = self.results.get(name)
            if res is None:
                continue
            output = rec.output["value"] if is_redacted(rec.output) else rec.output
            res.status, res.output, res.error = rec.status, output, rec.error
            res.attempts, res.started_at, res.finished_at = (
                rec.attempts,
                rec.started_at,
                rec.finished_at,
            )
            res.duration, res.reason, res.rollback = rec.duration, rec.reason, rec.rollback
            if rec.status == R.STEP_SUCCEEDED:
                outputs[name] = output
            decision = decisions.get(name)
            if decision is None:
                continue
            if rec.rollback == R.ROLLBACK_RUNNING:  # the process died during its rollback
                if decision == SKIP:
                    error = "rollback interrupted and skipped by the operator: check, undo by hand"
                    res.rollback, res.rollback_error = R.STEP_ROLLBACK_FAILED, error
                    if res.status == R.STEP_SUCCEEDED:
                        res.status = R.STEP_ROLLBACK_FAILED
                else:
                    res.rollback = None  # runs again, in its place in the rollback order
                changed.append(name)
            elif decision in (RERUN, RETRY):
                # A new attempt: its time starts now, not when the dead process started it, and
                # it has no output until it gives one (a re-run probe that fails is not its old
                # value: a gate's plan would match the approved one).
                outputs.pop(name, None)
                res.status, res.started_at, res.finished_at, res.duration = (
                    R.PENDING,
                    None,
                    None,
                    None,
                )
            elif decision == SKIP:
                res.status, res.reason = R.SKIPPED, "skipped (operator)"
                changed.append(name)
            else:  # CUT_OFF: the four decisions interrupted() steps can get
                assert decision == CUT_OFF, decision
                res.status, res.reason = R.STEP_CANCELLED, "interrupted; cut off by the rollback"
                changed.append(name)
        steps = self.steps
        finished = sorted(
            (r.completed_seq or 0, n)
            for n, r in records.items()
            if n in steps and n in self.results
        )
        results = self.results
        self.completed = [
            n for _, n in finished if results[n].status == R.STEP_SUCCEEDED and steps[n].reversible
        ]
        self.failed = [n for _, n in finished if self._cut_or_failed(n)]
        self.seqs = {n: r.completed_seq for n, r in records.items() if r.completed_seq}
        self.seq = max((r.completed_seq or 0 for r in records.values()), default=0)
        if cause == CANCELLED:
            self.cancelled = True
        elif cause is not None or rolling_back(self.steps, records):
            self.failing = True
        return changed

    def _cut_or_failed(self, name: str) -> bool:
        res, step = self.results[name], self.steps[name]
        if res.status == R.STEP_FAILED:
            return step.options.required
        return res.status == R.STEP_CANCELLED and step.reversible

    def settle(self, *, cancel: bool, failed_gates: Mapping[str, str] | None = None) -> list[str]:
        """Deny or cancel a stored run: its gates end, nothing new runs; return what changed.

        ``failed_gates``: gates that fail (an expired approval: gate -> error) rather than being
        denied or cancelled.
        """
        if cancel:
            self.cancelled = True
        failed_gates = failed_gates or {}
        changed = []
        for name, res in self.results.items():
            if res.status == R.AWAITING_APPROVAL and name in failed_gates:
                res.status, res.error = R.STEP_FAILED, failed_gates[name]
                self.seq += 1
                self.seqs[name] = self.seq
                self.failed.append(name)
                self.failing = True
                changed.append(name)
            elif res.status == R.AWAITING_APPROVAL:
                if cancel:
                    res.status, res.reason = R.STEP_CANCELLED, "run cancelled"
                else:
                    res.status, res.reason = R.DENIED, "approval denied"
                    self.failing = True
                changed.append(name)
        return changed

    # -- scheduling ----------------------------------------------------------------------------

    def start(self) -> None:
        """Count each step's unfinished inputs; queue the steps that have none."""
        results, waiting, ready = self.results, self._waiting, self._ready
        for name in self.steps:
            if results[name].status in DONE_LIKE:
                self._released.add(name)
                continue  # an awaiting gate is not done: it is re-checked once its inputs are
            count = 0
            for p in self._inputs[name]:
                if results[p].status not in DONE_LIKE:
                    count += 1
            waiting[name] = count
            if count == 0:
                ready.append(name)

    @property
    def stopping(self) -> bool:
        """Nothing new starts: the run is failing or cancelled."""
        return self.failing or self.cancelled

    def take_ready(self, slots: int) -> list[str]:
        """Up to ``slots`` steps that may start now, removed from the queue."""
        ready, out = self._ready, []
        while ready and slots > 0 and not (self.failing or self.cancelled):
            out.append(ready.popleft())
            slots -= 1
        return out

    def has_ready(self) -> bool:
        """Whether a step may be started now: none once the run is failing or cancelled, so a
        driver starts nothing new while it winds down."""
        return bool(self._ready) and not (self.failing or self.cancelled)

    def _release(self, name: str) -> None:
        if name in self._released:
            return
        self._released.add(name)
        waiting = self._waiting
        for dep in self._dependents[name]:
            if dep in waiting:
                waiting[dep] -= 1
                if waiting[dep] == 0:
                    self._ready.append(dep)

    def blocked_by(self, args: tuple[Arg, ...]) -> str | None:
        """Why a call with these arguments cannot happen (an input skipped/failed), or None."""
        results = self.results
        for arg in args:
            if arg.source == "step" and not arg.has_default:
                status = results[arg.key].status
                if status != R.STEP_SUCCEEDED:
                    return f"{arg.key} {'failed' if status == R.STEP_FAILED else status}"
        return None

    # -- step transitions ----------------------------------------------------------------------

    def on_started(self, name: str, attempt: int) -> None:
        """Record that attempt ``attempt`` began (the driver records it before side effects).

        What the step said before it ran (the pause of an approved gate, an interrupted step's
        error) is not about this attempt: stored with the start, it would outlive the outcome."""
        res = self.results[name]
        res.attempts, res.status, res.reason, res.error = attempt, R.STEP_RUNNING, None, None

    def on_succeeded(self, name: str) -> int:
        """Record a success; return its completion number (stored, the rollback order)."""
        self.results[name].status = R.STEP_SUCCEEDED
        self.seq += 1
        self.seqs[name] = self.seq
        if self.steps[name].reversible:
            self.completed.append(name)
        self._release(name)
        return self.seq

    def on_failed(self, name: str) -> int:
        """Record a failure; return its finish number (stored: failures are undone first)."""
        self.results[name].status = R.STEP_FAILED
        self.seq += 1
        self.seqs[name] = self.seq
        if self.steps[name].options.required:
            self.failed.append(name)
            self.failing = True
        self._release(name)
        return self.seq

    def on_cancelled(self, name: str, reason: str = "cancelled") -> int:
        """Cut off mid-way: a reversible step's own rollback runs (it may have half-happened)."""
        res = self.results[name]
        res.status, res.reason = R.STEP_CANCELLED, reason
        self.seq += 1
        self.seqs[name] = self.seq
        if self.steps[name].reversible:
            self.failed.append(name)
        self._release(name)
        return self.seq

    def on_skipped(self, name: str, reason: str) -> None:
        """Record a skip (``when=``, a skipped input); its dependents are decided in turn."""
        res = self.results[name]
        res.status, res.reason = R.SKIPPED, reason
        self._release(name)

    def on_planned(self, name: str, reason: str) -> None:
        """A dry run's "would run": like a skip for scheduling, reported as planned."""
        res = self.results[name]
        res.status, res.reason = R.PLANNED, reason
        self._release(name)

    def on_awaiting(self, name: str, why: str | None = None) -> bool:
        """The step waits at its gate (``why``: the gate's question); False when it already was
        (nothing new to record)."""
        res = self.results[name]
        if res.status == R.AWAITING_APPROVAL:
            return False
        res.status, res.reason = R.AWAITING_APPROVAL, why or "awaiting approval"
        return True

    def on_denied(self, name: str) -> None:
        """A gate was denied: the run is failing from here (its driver rolls back)."""
        res = self.results[name]
        res.status, res.reason = R.DENIED, "approval denied"
        self.failing = True

    def fail_run(self) -> None:
        """A fatal error outside any step (store, audit): stop and roll back."""
        self.failing = True

    def cancel_run(self) -> None:
        """Stop starting steps (Ctrl-C, ``runbook cancel``); the driver cancels what runs."""
        self.cancelled = True

    # -- retries -------------------------------------------------------------------------------

    def should_retry(self, name: str, attempt: int, *, lease_lost: bool = False) -> bool:
        """Another attempt after a failed one? Never after a lost lease (someone else holds it)."""
        return attempt <= self.steps[name].options.retries and not lease_lost

    def backoff(self, name: str, attempt: int, u: float) -> float:
        """Capped exponential backoff with equal jitter (half fixed, half ``u``-random)."""
        opts = self.steps[name].options
        return _backoff.jittered(_backoff.delay(attempt, opts.backoff, opts.backoff_max), u)

    # -- rollback ------------------------------------------------------------------------------

    def begin_rollback(self) -> None:
        """Fix the rollback order: the failed (or cut-off) steps' own rollbacks first, then the
        completed reversible steps, newest first; rollbacks that already ended are not redone."""
        steps, results = self.steps, self.results
        order = [
            n
            for n in dict.fromkeys(self.failed)
            if steps[n].rollback is not None and results[n].rollback is None
        ]
        seen = set(order)
        for n in reversed(self.completed):
            if (
                n not in seen
                and steps[n].rollback is not None
                and results[n].status == R.STEP_SUCCEEDED
                and results[n].rollback is None
            ):
                order.append(n)
                seen.add(n)
        self._rollback = deque(order)

    def next_rollback(self) -> str | None:
        """The next step to roll back, or None when the rollback is complete."""
        if self._rollback is None:
            self.begin_rollback()
        assert self._rollback is not None
        return self._rollback.popleft() if self._rollback else None

    def on_rollback_started(self, name: str) -> None:
        """Mark the rollback running, so a crash now is seen as an interrupted rollback."""
        self.results[name].rollback = R.ROLLBACK_RUNNING

    def on_rolled_back(self, name: str) -> None:
        """The step's rollback succeeded; a failed step keeps ``failed`` as its status."""
        res = self.results[name]
        res.rollback = R.STEP_ROLLED_BACK
        if res.status == R.STEP_SUCCEEDED:  # a failed step keeps "failed"
            res.status = R.STEP_ROLLED_BACK

    def on_rollback_failed(self, name: str, error: str, *, halt: bool = False) -> None:
        """``halt``: undoing more would make things worse (``RollbackHalted``): stop here."""
        res = self.results[name]
        res.rollback, res.rollback_error = R.STEP_ROLLBACK_FAILED, error
        if res.status == R.STEP_SUCCEEDED:
            res.status = R.STEP_ROLLBACK_FAILED
        if halt and self._rollback is not None:
            self._rollback.clear()

    # -- the run -------------------------------------------------------------------------------

    def status(self, *, dry_run: bool = False) -> str:
        """The run's status, worst first: a failed rollback outranks everything, because it is
        the one outcome that needs a human before anything else happens."""
        if dry_run:
            return R.SUCCEEDED
        rollbacks = [r.rollback for r in self.results.values()]
        if R.STEP_ROLLBACK_FAILED in rollbacks:
            return R.ROLLBACK_FAILED
        if self.cancelled:
            return R.CANCELLED
        if self.failing:
            return R.ROLLED_BACK if R.STEP_ROLLED_BACK in rollbacks else R.FAILED
        if any(r.status == R.AWAITING_APPROVAL for r in self.results.values()):
            return R.PAUSED
        return R.SUCCEEDED

    def awaiting(self) -> list[str]:
        """The gates waiting for a decision: what a paused run prints as approve commands."""
        return [n for n, r in self.results.items() if r.status == R.AWAITING_APPROVAL]

    def first_error(self) -> str | None:
        """The summary's error: the first required failure, else the first denied gate."""
        for name in self.failed:
            if self.results[name].error:
                return f"{name}: {self.results[name].error}"
        for name, res in self.results.items():
            if res.status == R.DENIED:
                return f"{name}: approval denied"
        return None
