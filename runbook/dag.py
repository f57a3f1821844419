"""Ordering the steps: a stable topological sort, cycle reporting and parallel levels.

Kept apart from collection so the graph logic is testable on plain dicts of names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a path ``[a, b, ..., a]``, or None. ``edges[n]`` = n's predecessors.

    Iterative depth-first search with an explicit stack, so a cycle through thousands of steps is
    reported instead of overflowing Python's recursion limit.
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    for root in edges:
        if color[root] != white:
            continue
        path: list[str] = [root]
        color[root] = grey
        pending: list[Iterator[str]] = [iter(edges.get(root, ()))]
        while pending:
            pred = next(pending[-1], None)
            if pred is None:
                pending.pop()
                color[path.pop()] = black
                continue
            state = color.get(pred, black)
            if state == grey:
                found = [*path[path.index(pred) :], pred]
                # Report in execution order: a runs before b runs before ... a.
                return list(reversed(found))
            if state == white:
                color[pred] = grey
                path.append(pred)
                pending.append(iter(edges.get(pred, ())))
    return None


def toposort(order: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm, breaking ties by ``order`` (definition order) so output is stable."""
    position = {name: i for i, name in enumerate(order)}
    indegree = {name: len(set(edges.get(name, ()))) for name in order}
    dependents: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for pred in set(edges.get(name, ())):
            dependents[pred].append(name)
    import heapq

    ready = [(position[n], n) for n in order if indegree[n] == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        out.append(name)
        for dep in dependents[name]:
            indegree[dep] -= 1
            if indegree[dep] == 0:
                heapq.heappush(ready, (position[dep], dep))
    if len(out) != len(order):
        raise ValueError("graph has a cycle")
    return out


def levels(order: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Group steps into levels that could run in parallel: level = 1 + max level of predecessors."""
    level: dict[str, int] = {}
    for name in order:  # ``order`` is topological
        preds = edges.get(name, ())
        level[name] = 1 + max((level[p] for p in preds), default=-1)
    out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for name in order:
        out[level[name]].append(name)
    return out
