"""Dependency graphs among features: transitive closures and the cycles that forbid them.

A graph is a mapping from a node to the nodes it depends on. Edges to nodes that are not
keys are kept in closures (validation reports them as dangling references) but have no
edges of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def closure(graph: Mapping[str, Iterable[str]], *, node: str) -> frozenset[str]:
    """Every node reachable from `node`, excluding `node` itself (even on a cycle)."""
    seen: set[str] = set()
    stack = list(graph.get(node, ()))
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(graph.get(current, ()))
    seen.discard(node)
    return frozenset(seen)


def closures(graph: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    return {node: closure(graph, node=node) for node in graph}


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[tuple[str, ...]]:
    """Cycles found by a depth-first search, each once, as `(a, b, c, a)`.

    Every cyclic graph yields at least one cycle (each back edge closes one). A cycle is
    rotated to start at its smallest node so the same cycle found from two starting points
    is reported once, and the list is sorted so the report is stable.
    """
    edges = {node: list(dict.fromkeys(targets)) for node, targets in graph.items()}
    done: set[str] = set()
    found: set[tuple[str, ...]] = set()
    for root in sorted(edges):
        if root in done:
            continue
        # Iterative DFS: a policy may chain features deeply and recursion limits are small.
        path: list[str] = [root]
        on_path: dict[str, int] = {root: 0}
        iterators = [iter(edges[root])]
        while iterators:
            target = next(iterators[-1], None)
            if target is None:
                iterators.pop()
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
                continue
            if target in on_path:
                found.add(_rotate(path[on_path[target] :]))
            elif target not in done and target in edges:
                on_path[target] = len(path)
                path.append(target)
                iterators.append(iter(edges[target]))
    return sorted(found)


def describe_cycle(cycle: tuple[str, ...]) -> str:
    return " -> ".join(cycle)


def _rotate(loop: list[str]) -> tuple[str, ...]:
    start = loop.index(min(loop))
    ordered = loop[start:] + loop[:start]
    return (*ordered, ordered[0])
