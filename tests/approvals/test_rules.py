"""The pure parts: identities, rules, groups, plans."""

from __future__ import annotations

import pytest

from runbook import plan as P
from runbook.approvals import Rules
from runbook.identity import distinct, expand, normalize, same
from runbook.markers import Approval, parse_duration

GROUPS = {"dba": ["carol", "Dan"], "sre": ["bob", "erin"]}


def test_identities_compare_after_nfkc_casefold_and_strip() -> None:
    assert normalize("  OPS ") == "ops"
    assert same("ops", "OPS") and same("ｏｐｓ", "ops")  # full-width letters are NFKC-equal
    assert same("Straße", "STRASSE")  # casefold, not lower
    assert not same("ops", "0ps")
    assert distinct(["ops", "OPS", " Ops"]) == {"ops"}


def test_ops_and_OPS_are_one_approver() -> None:
    rules = Rules(Approval(min=2), "alice", (), {})
    assert rules.refusal("OPS", ["ops"]) is not None
    assert not rules.satisfied(["ops", "OPS"])
    assert rules.satisfied(["ops", "bob"])


def test_allow_self_compares_normalised() -> None:
    rules = Rules(Approval(allow_self=False), "Alice@Example.com", (), {}, "r1", "go")
    assert "cannot approve 'go'" in rules.refusal("alice@example.com ", [])


def test_group_entries_expand_and_unknown_groups_are_errors() -> None:
    assert expand(["alice", "group:dba"], GROUPS) == ("alice", "carol", "Dan")
    with pytest.raises(KeyError, match="unknown group 'dbas'"):
        expand(["group:dbas"], GROUPS)


def test_one_approver_from_each_group() -> None:
    rules = Rules(Approval(min=2, groups=("dba", "sre")), "alice", (), GROUPS)
    assert (
        rules.missing([])
        == "2 more approver(s) and one approver from group dba, one from group sre"
    )
    assert not rules.satisfied(["bob", "erin"])  # two people, both sre
    assert rules.missing(["bob", "erin"]) == "one approver from group dba"
    assert "in none of those groups" in rules.refusal("frank", ["bob", "erin"])
    assert rules.refusal("dan", ["bob", "erin"]) is None  # "Dan" in the group, normalised
    assert rules.satisfied(["bob", "DAN"])


def test_approving_past_the_quorum_is_refused() -> None:
    rules = Rules(Approval(min=1), "alice", (), {}, "r1", "go")
    assert "past the quorum" in rules.refusal("carol", ["bob"])


def test_approvers_list_may_name_groups_and_gate_groups_are_allowed() -> None:
    rules = Rules(Approval(approvers=("group:sre",), groups=("dba",)), "alice", (), GROUPS)
    assert rules.may_approve("erin") is None and rules.may_approve("carol") is None
    assert "may not approve" in rules.may_approve("mallory")


def test_strict_deny_and_cancel_are_for_approvers_and_the_initiator() -> None:
    rules = Rules(Approval(), "alice", ("bob",), {})
    assert rules.may_decide("ALICE") and rules.may_decide("bob")
    assert not rules.may_decide("mallory")
    assert not Rules(Approval(), "alice", (), {}).may_decide("mallory")


def test_timeouts_parse() -> None:
    assert parse_duration("4h") == 14400 and parse_duration("1h30m") == 5400
    assert Approval(timeout="30m").timeout_seconds == 1800
    for bad in ("soon", "0s", "-1h"):
        with pytest.raises(ValueError):
            Approval(timeout=bad)
    with pytest.raises(ValueError, match="on_timeout"):
        Approval(timeout="1h", on_timeout="ignore")


async def _async_reason() -> str:
    return "why"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"approvers": 5}, "Approval(approvers=...) must be a list of names, got 5"),
        ({"approvers": ["alice", ""]}, "must be a list of names, got ['alice', '']"),
        ({"groups": [None]}, "Approval(groups=...) must be a list of names, got [None]"),
        ({"min": True}, "Approval(min=...) must be an integer >= 1, got True"),
        ({"min": 0}, "Approval(min=...) must be an integer >= 1, got 0"),
        ({"allow_self": "no"}, "Approval(allow_self=...) must be True or False, got 'no'"),
        ({"reason": "because"}, "Approval(reason=...) must be a function, got 'because'"),
        ({"reason": _async_reason}, "Approval(reason=...) must be a plain function, not async def"),
    ],
)
def test_a_malformed_approval_says_which_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        Approval(**kwargs)
    assert message in str(refused.value)


def test_approvers_and_groups_take_one_name_or_any_collection_of_names() -> None:
    assert Approval(approvers="alice").approvers == ("alice",)
    assert Approval(approvers=["alice", "group:dba"], groups=("dba",)).groups == ("dba",)
    assert Approval(approvers={"bob"}).approvers == ("bob",)


def _plan(**changes):
    base = dict(
        run_id="r1",
        step="go",
        runbook_sha256="a" * 64,
        env="prod",
        params={"version": "1.0", "token": "s3cret"},
        secret=frozenset({"token"}),
        probes={"replicas": 3},
    )
    base.update(changes)
    return P.build(**base)


def test_secret_params_enter_the_plan_as_an_hmac_under_the_run_id() -> None:
    plan = _plan()
    assert "s3cret" not in P.canonical(plan)
    assert set(plan["params"]["token"]) == {"hmac-sha256"}
    assert P.plan_hash(_plan()) == P.plan_hash(plan)
    assert P.plan_hash(_plan(params={"version": "1.0", "token": "other"})) != P.plan_hash(plan)
    other_run = _plan(run_id="r2")
    assert other_run["params"]["token"] != plan["params"]["token"]


def test_every_part_of_the_plan_changes_its_hash_and_is_named() -> None:
    plan = _plan()
    for change, words in [
        ({"run_id": "r2"}, "run_id changed"),
        ({"step": "other"}, "step changed"),
        ({"runbook_sha256": "b" * 64}, "runbook source changed"),
        ({"env": "stage"}, "env changed"),
        ({"probes": {"replicas": 4}}, "probe replicas: approved 3, now 4"),
        ({"params": {"version": "2.0", "token": "s3cret"}}, "param version: approved"),
    ]:
        moved = _plan(**change)
        assert P.plan_hash(moved) != P.plan_hash(plan)
        assert any(words in line for line in P.differences(plan, moved)), change
