"""A decision on a stored run (approve, deny, an expiry) is audited before the store holds it: an
audit trail that refuses the event leaves no stored decision (no silent audit gap), and a gate
whose rules name a group the config does not define is refused before anything is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runbook.audit.memory import MemorySink
from runbook.errors import AuditError, ConfigError
from runbook.testing.fakes import FakeClock

from .test_runner_durable import Durable


class Refusing(MemorySink):
    """An audit trail that refuses one kind of event (a full disk, a permission change)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def append(self, event: Any) -> Any:
        if event.kind == self.kind:
            raise AuditError(f"audit sink refused {event.kind}: disk full")
        return super().append(event)


@pytest.fixture
def d(tmp_path, store_url, write_runbook) -> Durable:
    return Durable(tmp_path, store_url, write_runbook)


def test_an_approval_the_trail_refuses_is_not_stored(d):
    d.write()
    paused = d.start()
    with pytest.raises(AuditError, match="refused approval_granted"):
        d.runner("bob", audit=[Refusing("approval_granted")]).approve(paused.run_id, actor="bob")
    assert d.store.approvals(paused.run_id) == []
    assert d.runner("bob").resume(paused.run_id).status == "paused"  # nothing counts
    assert d.journal == ["prepare"]


def test_a_denial_the_trail_refuses_is_not_stored_and_the_run_stays_paused(d):
    d.write()
    paused = d.start()
    with pytest.raises(AuditError, match="refused approval_denied"):
        d.runner("bob", audit=[Refusing("approval_denied")]).deny(
            paused.run_id, actor="bob", reason="no"
        )
    assert d.store.approvals(paused.run_id) == []
    assert d.store.get_run(paused.run_id).status == "paused"
    assert d.journal == ["prepare"]


def test_an_expiry_the_trail_refuses_is_not_stored(d):
    d.write('Approval(timeout="4h", on_timeout="deny")')
    paused = d.start(clock=FakeClock(datetime.now(UTC) - timedelta(hours=5), freeze=False))
    assert paused.status == "paused"
    with pytest.raises(AuditError, match="refused approval_expired"):
        d.runner("bob", audit=[Refusing("approval_expired")]).approve(paused.run_id, actor="bob")
    assert d.store.approvals(paused.run_id) == []
    assert d.store.get_run(paused.run_id).status == "paused"


def test_approving_a_gate_that_names_an_undefined_group_stores_nothing(d):
    d.write('Approval(groups=["nope"])')
    paused = d.start(groups={"dba": ["carol"], "nope": ["bob"]})  # then the config drops it
    assert paused.status == "paused"
    with pytest.raises(ConfigError, match=r"group 'nope'.*\[tool.runbook.groups\]: dba"):
        d.runner("bob", groups={"dba": ["carol"]}).approve(paused.run_id, actor="bob")
    assert d.store.approvals(paused.run_id) == []


def test_deny_in_strict_with_an_undefined_group_is_a_config_error(d):
    d.write('Approval(groups=["nope"])')
    strict: dict[str, Any] = {"protection": "strict", "approvers": ["carol"]}
    paused = d.start(**strict, groups={"nope": ["carol"]})  # then the config drops it
    assert paused.status == "paused"
    with pytest.raises(ConfigError, match="group 'nope'"):
        d.runner("bob", **strict).deny(paused.run_id, actor="bob", reason="no")
    assert d.store.approvals(paused.run_id) == []
    assert d.store.get_run(paused.run_id).status == "paused"
