"""Ordering the steps: a stable topological sort, cycle reporting and parallel levels.

Kept apart from collection so the graph logic is testable on plain dicts of names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a path ``[a, b, ..., a]``, or None. ``edges[n]`` = n's predecessors."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for pred in edges.get(node, ()):
            if color.get(pred, black) == grey:
                return [*stack[stack.index(pred) :], pred]
            if color.get(pred) == white:
                found = visit(pred)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in edges:
        if color[node] == white:
            found = visit(node)
            if found:
                # Report in execution order: a runs before b runs before ... a.
                return list(reversed(found))
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
