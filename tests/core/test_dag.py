"""The graph helpers on plain dicts: stable topological order, cycles as paths, parallel levels."""

from __future__ import annotations

import itertools
import random

import pytest

from runbook import dag


def test_toposort_respects_edges_and_keeps_definition_order_for_ties():
    order = ["deploy", "plan", "lint", "verify"]
    edges = {"deploy": ["plan"], "plan": [], "lint": [], "verify": ["deploy", "lint"]}
    assert dag.toposort(order, edges) == ["plan", "deploy", "lint", "verify"]


def test_toposort_random_dags_are_valid():
    rng = random.Random(7)
    for _ in range(20):
        names = [f"s{i}" for i in range(40)]
        edges = {n: [names[j] for j in range(i) if rng.random() < 0.1] for i, n in enumerate(names)}
        shuffled = names[:]
        rng.shuffle(shuffled)
        out = dag.toposort(shuffled, edges)
        position = {n: i for i, n in enumerate(out)}
        assert sorted(out) == sorted(names)
        assert all(position[p] < position[n] for n, preds in edges.items() for p in preds)


def test_toposort_refuses_a_cycle():
    with pytest.raises(ValueError, match="cycle"):
        dag.toposort(["a", "b"], {"a": ["b"], "b": ["a"]})


def test_find_cycle_returns_the_path_in_execution_order():
    assert dag.find_cycle({"a": [], "b": ["a"]}) is None
    cycle = dag.find_cycle({"x": [], "a": ["c"], "b": ["a"], "c": ["b"]})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    for before, after in itertools.pairwise(cycle):
        # each node is a predecessor of the next: "a -> b" means a runs before b
        assert before in {"a": ["c"], "b": ["a"], "c": ["b"]}[after]


def test_a_cycle_through_thousands_of_steps_is_reported_not_a_recursion_error():
    n = 5_000  # far past Python's default recursion limit of 1,000
    edges = {f"s{i}": [f"s{i - 1}"] for i in range(1, n)}
    edges["s0"] = [f"s{n - 1}"]
    cycle = dag.find_cycle(edges)
    assert cycle is not None and len(cycle) == n + 1 and cycle[0] == cycle[-1]


def test_a_long_chain_without_a_cycle_is_fine():
    edges = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(5_000)}
    assert dag.find_cycle(edges) is None


def test_self_loop_is_a_cycle():
    assert dag.find_cycle({"a": ["a"]}) == ["a", "a"]


def test_levels_group_what_can_run_together():
    edges = {"a": [], "b": [], "c": ["a"], "d": ["a", "b"], "e": ["d"]}
    assert dag.levels(["a", "b", "c", "d", "e"], edges) == [["a", "b"], ["c", "d"], ["e"]]
    assert dag.levels([], {}) == []
