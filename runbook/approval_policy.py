"""What the engine asks each time a gated step is reached, and the gate's state in the run.

:class:`ApprovalPolicy` is asked at every gate, on the first run and on every resume: it builds
the gate's plan from live values, pauses again when the plan drifted from the one that was put
up for approval, and counts only decisions that are still valid *as used*: bound to this plan,
by someone the rules (``runbook.approvals.Rules``, as they are now and as they were when
approved) allow, and, in a ``signers`` env, whose signature still verifies. The plan put up for
approval is kept in the run's options (``gate_state``, ``save_gate``), where ``runbook approve``,
gate expiry (runbook/expiry.py) and a Temporal workflow read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from runbook import plan as P
from runbook.approvals import Rules
from runbook.identity import distinct, normalize
from runbook.markers import Approval
from runbook.protection import Protection
from runbook.redact import stored_output
from runbook.store.base import ApprovalRecord, RunStore

GATES_KEY = "gates"  # RunRecord.options[GATES_KEY][step]: the plan put up for approval


def gate_state(options: Mapping[str, Any], step: str) -> dict[str, Any] | None:
    """The plan put up for approval at ``step`` (plan, plan_hash, requested_at, deadline)."""
    gates = options.get(GATES_KEY) or {}
    state = gates.get(step)
    return dict(state) if isinstance(state, dict) else None


def save_gate(store: RunStore, run_id: str, step: str, state: Mapping[str, Any]) -> None:
    record = store.get_run(run_id)
    options = dict(record.options)
    gates = dict(options.get(GATES_KEY) or {})
    gates[step] = dict(state)
    options[GATES_KEY] = gates
    store.update_run(run_id, options=options)


def new_state(
    plan: dict[str, Any], digest: str, approval: Approval, now: datetime
) -> dict[str, Any]:
    seconds = approval.timeout_seconds
    deadline = (now + timedelta(seconds=seconds)).isoformat() if seconds else None
    return {
        "plan": plan,
        "plan_hash": digest,
        "requested_at": now.isoformat(),
        "deadline": deadline,
        "on_timeout": approval.on_timeout if seconds else None,
    }


def stored_form(output: Any, mask: Any) -> Any:
    """An output as the run store keeps it (secrets masked), so plans built live and from the
    store agree."""
    return stored_output(output, mask)


@dataclass
class ApprovalPolicy:
    run_id: str
    actor: str  # who started the run
    protection: Protection
    store: RunStore | None
    env_approvers: tuple[str, ...] = ()
    yes: bool = False  # --yes: approve as the running actor where the rules allow it
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)
    signers: Path | None = None
    # The live run, to build plans: runbook, env, params (a Params), mask (the redactor).
    runbook: Any = None
    env: str = ""
    params: Any = None
    mask: Any = None
    _pending: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def rules(self, approval: Approval, step: str = "") -> Rules:
        return Rules(approval, self.actor, self.env_approvers, self.groups, self.run_id, step)

    def allowed(self, approval: Approval) -> tuple[str, ...]:
        return self.rules(approval).named()

    def request_data(self, step: str, approval: Approval) -> dict[str, Any]:
        data: dict[str, Any] = {
            "min": approval.min,
            "allow_self": approval.allow_self,
            "approvers": list(self.allowed(approval)),
            "groups": list(approval.groups),
            "command": f"runbook approve {self.run_id} --step {step}",
            "signed": self.signers is not None,
        }
        state = self._pending.get(step)
        if state is not None:
            data.update(plan_hash=state["plan_hash"], plan=state["plan"])
            if state.get("deadline"):
                data.update(deadline=state["deadline"], on_timeout=state["on_timeout"])
        return data

    def _records(self, step: str) -> Sequence[ApprovalRecord]:
        return self.store.approvals(self.run_id, step) if self.store is not None else []

    def plan(self, step: str, outputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.runbook is None:  # a bare policy (unit tests): bind to the run and step only
            return {"run_id": self.run_id, "step": step}
        return P.for_gate(
            self.runbook,
            step,
            run_id=self.run_id,
            env=self.env,
            params=self.params,
            outputs=outputs,
            mask=lambda v: stored_form(v, self.mask),
        )

    def check(self, step: str, approval: Approval, execution: Any) -> str:
        """``granted``, ``denied`` or ``pending``; records auto-grants and re-requests."""
        records = self._records(step)
        if any(r.decision == "denied" for r in records):
            return "denied"
        plan = self.plan(step, execution.outputs)
        digest = P.plan_hash(plan)
        now = execution.clock.now()
        if not self.protection.require_approval and any(
            r.auto and r.data.get("plan_hash") == digest for r in records
        ):
            return "granted"  # the engine's own grant of this plan, recorded before
        rules = self.rules(approval, step)
        state = self._state(step)
        if state is not None and state.get("plan_hash") != digest:
            self._drifted(step, approval, execution, state, plan, digest, now)
            return "pending"
        valid = self.valid_grants(step, rules, records, digest, execution)
        if rules.satisfied(valid):
            return "granted"
        if not self.protection.require_approval:
            comment = f"auto-approved: env protection {self.protection.level}"
            self._grant(step, execution, digest, auto=True, comment=comment)
            return "granted"
        if (
            self.yes
            and self.protection.allow_yes
            and self.signers is None
            and rules.refusal(self.actor, valid) is None
            and rules.satisfied([*valid, self.actor])
        ):
            self._grant(step, execution, digest, auto=False, comment="approved with --yes")
            return "granted"
        if state is None:
            state = new_state(plan, digest, approval, now)
            self._remember(step, state)
        return "pending"

    def _state(self, step: str) -> dict[str, Any] | None:
        if self.store is None:
            return self._pending.get(step)
        return gate_state(self.store.get_run(self.run_id).options, step)

    def _remember(self, step: str, state: dict[str, Any]) -> None:
        self._pending[step] = state
        if self.store is not None:
            save_gate(self.store, self.run_id, step, state)

    def _drifted(
        self,
        step: str,
        approval: Approval,
        execution: Any,
        old: Mapping[str, Any],
        plan: dict[str, Any],
        digest: str,
        now: datetime,
    ) -> None:
        """The world moved since the plan was put up: ask again, naming what changed."""
        reasons = P.differences(old.get("plan") or {}, plan) or ["the plan changed"]
        state = new_state(plan, digest, approval, now)
        self._remember(step, state)
        data = self.request_data(step, approval)
        data.update(
            reason="plan changed since it was put up for approval: " + "; ".join(reasons),
            changes=reasons,
            previous_plan_hash=old.get("plan_hash"),
        )
        execution.emit("approval_requested", step, data)

    def valid_grants(
        self,
        step: str,
        rules: Rules,
        records: Sequence[ApprovalRecord],
        digest: str,
        execution: Any = None,
    ) -> list[str]:
        """Who granted *this* plan and still counts under the rules as they are now."""
        from runbook.decisions import verify_record

        out: list[str] = []
        for r in records:
            if r.decision != "granted":
                continue
            if r.auto and not self.protection.require_approval:
                continue  # the engine's own grant: check() decides those, not the quorum
            if r.data.get("plan_hash") != digest and not r.auto:
                continue  # an approval of another plan (before drift) does not count
            problem = None
            if r.auto:
                problem = (
                    "it is an automatic grant, and env protection "
                    f"{self.protection.level!r} requires approval"
                )
            elif r.data.get("rules") not in (None, rules.approval.rules()):
                problem = "the gate's rules changed since it was approved"
            else:
                problem = rules.may_approve(r.actor)
            if problem is None and self.signers is not None:
                problem = verify_record(r, self.signers, digest)
            if problem is not None:
                if execution is not None:
                    execution.emit(
                        "approval_refused",
                        step,
                        {
                            "decision": "use",
                            "claimed_actor": r.actor,
                            "reason": f"the approval by {r.actor} does not count: {problem}",
                        },
                        actor="runbook",
                    )
                continue
            if normalize(r.actor) not in distinct(out):
                out.append(r.actor)
        return out

    def _grant(self, step: str, execution: Any, digest: str, *, auto: bool, comment: str) -> None:
        now = execution.clock.now()
        data = {"plan_hash": digest, "signed_at": now.isoformat()}
        if self.store is not None:
            self.store.add_approval(
                ApprovalRecord(self.run_id, step, self.actor, "granted", comment, now, auto, data)
            )
        execution.emit(
            "approval_granted",
            step,
            {"comment": comment, "auto": auto, "approver": self.actor, "plan_hash": digest},
        )
