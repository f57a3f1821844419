"""canary(): expansion, the shift/bake/analyze chain, abort to weight 0, definition errors."""

from __future__ import annotations

from typing import Any

import pytest

from runbook.errors import DefinitionError
from runbook.markers import Approval
from runbook.probes import Outcome, ProbeResult
from runbook.strategies import canary

SW = "set_weights"


def ok(service, weight, calls):
    calls.append((service, weight))
    return True


def test_expands_into_named_chain_with_gates_and_rollbacks():
    group = canary("web", weights=[5, 25, 50, 100], bake=300, analysis=ok, pause_at=[50])
    names = [s.name for s in group.steps]
    assert names == [
        "shift-5", "bake-5", "analyze-5",
        "shift-25", "bake-25", "analyze-25",
        "approve-50", "shift-50", "bake-50", "analyze-50",
        "shift-100", "bake-100", "analyze-100",
    ]  # fmt: skip
    by_name = {s.name: s for s in group.steps}
    assert by_name["approve-50"].options.approval == Approval()
    assert by_name["shift-50"].after == ("approve-50",)
    assert all(s.options.reversible and s.rollback for s in group.steps if "shift" in s.name)
    assert not any(s.options.reversible for s in group.steps if "shift" not in s.name)
    assert by_name["analyze-5"].uses == (ok,) and by_name["analyze-5"].extra == (
        "service",
        "weight",
    )
    assert group.strategy == "canary" and group.service == "web"
    assert group.file == __file__ and group.line is not None


def test_minimal_canary_has_only_shifts():
    group = canary("web", weights=[50, 100])
    assert [s.name for s in group.steps] == ["shift-50", "shift-100"]


def test_success_shifts_bakes_and_analyses(run_group, resources, router, clock, ctx):
    group = canary("web", weights=[5, 50, 100], bake=300, analysis=ok, after="stage")
    result = run_group(group, resources)
    assert result.status == "succeeded"
    assert router.writes == [
        (SW, "web", {"canary": 5, "stable": 95}),
        (SW, "web", {"canary": 50, "stable": 50}),
        (SW, "web", {"canary": 100, "stable": 0}),
    ]
    assert router.peek("web") == {"canary": 100, "stable": 0}
    assert resources["calls"] == [("web", 5), ("web", 50), ("web", 100)]
    assert sum(clock.sleeps) == pytest.approx(900)
    assert len(clock.sleeps) == 30  # progress every 10% of each bake
    fractions = [f for _, f in ctx.progress_calls]
    assert fractions[:11] == pytest.approx([i / 10 for i in range(11)])
    assert ctx.progress_calls[5][0] == "baking web: 150s of 300s"
    assert ctx.changes[0] == ("router:web", {"stable": 100}, {"canary": 5, "stable": 95})
    assert result.outputs["analyze-100"] == {"service": "web", "weight": 100, "passed": True}
    assert group.after == ("stage",)


def test_long_bake_reports_progress_at_least_every_minute(run_group, resources, clock):
    run_group(canary("web", weights=[100], bake=3600), resources)
    assert len(clock.sleeps) == 60 and max(clock.sleeps) == pytest.approx(60)


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        (lambda weight: weight < 50, "returned False"),
        (lambda weight: 1 / (weight - 50), "ZeroDivisionError: division by zero"),
        (
            lambda weight: (
                ProbeResult("ambiguous", "metrics query timed out") if weight == 50 else 1
            ),
            "ambiguous: metrics query timed out",
        ),
        (lambda weight: Outcome.UNHEALTHY if weight == 50 else Outcome.HEALTHY, "unhealthy"),
    ],
    ids=["false", "raises", "ambiguous-probe", "outcome"],
)
def test_failing_analysis_aborts_to_weight_zero(run_group, resources, router, analysis, message):
    group = canary("web", weights=[5, 50, 100], bake=60, analysis=analysis)
    result = run_group(group, resources)
    assert result.statuses == {
        "shift-5": "rolled_back", "bake-5": "succeeded", "analyze-5": "succeeded",
        "shift-50": "rolled_back", "bake-50": "succeeded", "analyze-50": "failed",
    }  # fmt: skip
    assert result.order[-2:] == ["undo:shift-50", "undo:shift-5"]
    assert f"canary analysis <lambda> for web at 50%: {message}" in result.errors["analyze-50"]
    assert router.writes == [
        (SW, "web", {"canary": 5, "stable": 95}),
        (SW, "web", {"canary": 50, "stable": 50}),
        (SW, "web", {"canary": 0, "stable": 100}),
        (SW, "web", {"canary": 0, "stable": 100}),
    ]
    assert router.peek("web") == {"canary": 0, "stable": 100}


def test_router_failure_at_a_shift_rolls_back_earlier_shifts(run_group, resources, router):
    router.fail(SW, RuntimeError("mesh API down"), after=1)
    result = run_group(canary("web", weights=[10, 100], baseline="v1", canary="v2"), resources)
    # The failed shift is rolled back first (output=None): a half-applied shift still ends at 0.
    assert result.statuses == {"shift-10": "rolled_back", "shift-100": "rolled_back"}
    assert result.order == ["shift-10", "shift-100", "undo:shift-100", "undo:shift-10"]
    assert result.errors["shift-100"] == "mesh API down"
    assert router.writes == [
        (SW, "web", {"v2": 10, "v1": 90}),
        (SW, "web", {"v2": 100, "v1": 0}),  # attempted, raised
        (SW, "web", {"v2": 0, "v1": 100}),
        (SW, "web", {"v2": 0, "v1": 100}),
    ]
    assert router.peek("web") == {"v2": 0, "v1": 100}


def test_analysis_gets_injection_and_may_be_async(run_group, resources):
    seen: list[Any] = []

    async def error_rate_ok(service, weight, router, threshold=0.01):
        seen.append((service, weight, router.peek(service), threshold))

    run_group(canary("api", weights=[20, 100], analysis=error_rate_ok), resources)
    assert seen == [
        ("api", 20, {"canary": 20, "stable": 80}, 0.01),
        ("api", 100, {"canary": 100, "stable": 0}, 0.01),
    ]


def test_four_eyes_approval_for_pauses():
    group = canary("web", weights=[5, 50], pause_at=[5, 50], approval=Approval(min=2))
    gates = [s for s in group.steps if s.name.startswith("approve-")]
    assert [g.name for g in gates] == ["approve-5", "approve-50"]
    assert all(g.options.approval == Approval(min=2) for g in gates)
    assert group.steps[0].name == "approve-5"


def test_gates_are_no_ops_when_run(run_group, resources, router):
    result = run_group(canary("web", weights=[5, 100], pause_at=[100]), resources)
    assert result.outputs["approve-100"] is None and result.status == "succeeded"
    assert router.peek("web") == {"canary": 100, "stable": 0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": []}, "weights= must be a non-empty list of percentages, got []"),
        ({"weights": "5,50"}, "weights= must be a non-empty list"),
        ({"weights": [5, 5, 100]}, "weights= must be strictly increasing, got [5, 5, 100]"),
        ({"weights": [50, 10]}, "strictly increasing"),
        ({"weights": [0, 100]}, "0 < w <= 100, got 0"),
        ({"weights": [50, 101]}, "got 101"),
        ({"weights": [True]}, "got True"),
        ({"weights": [5.5]}, "got 5.5"),
        ({"weights": [5, 100], "pause_at": [50]}, "pause_at= [50] are not in weights= [5, 100]"),
        ({"weights": [100], "bake": -1}, "bake= must be a number of seconds >= 0, got -1"),
        ({"weights": [100], "bake": float("inf")}, "bake= must be a number of seconds"),
        ({"weights": [100], "analysis": "error_rate_ok"}, "analysis= must be a function or None"),
        ({"weights": [100], "pause_at": [100], "approval": False}, "pause_at= needs approval="),
        ({"weights": [100], "approval": "yes"}, "approval= must be a bool or Approval(...)"),
        ({"weights": [100], "baseline": "x", "canary": "x"}, "must differ, both are 'x'"),
        ({"weights": [100], "canary": ""}, "canary must be a non-empty string, got ''"),
    ],
)
def test_definition_errors(kwargs, message):
    with pytest.raises(DefinitionError) as info:
        canary("web", **kwargs)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{__file__}:")
    assert info.value.file == __file__ and "canary(): " in info.value.message


def test_service_must_be_named():
    with pytest.raises(DefinitionError, match="service must be a non-empty string"):
        canary("", weights=[100])
