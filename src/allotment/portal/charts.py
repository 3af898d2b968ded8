"""Inline SVG geometry for the portal's charts: pure functions of numbers, no I/O.

usage_chart(days, values, limit=, limit_period=)   daily bars, a running total when the
                                                   limit is per month or year, the limit
                                                   and 80 % lines
axis_ticks(maximum)                                round axis values (steps of 1, 2 or 5
                                                   × 10^n) from 0 to at least `maximum`
tick_label(value, step)                            a tick as shown: 12,000, 0.25
graph_layout(graph)                                plans, add-ons and features in three
                                                   columns, with their edges
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from allotment.portal.upgrades import Graph

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 30, 28


@dataclass(frozen=True)
class Bar:
    day: date
    value: Decimal
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Line:
    label: str
    value: Decimal
    y: float


@dataclass(frozen=True)
class UsageChart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    lines: tuple[Line, ...]  # the limit and its 80 %, where a limit applies to the scale
    running: str | None  # polyline points of the running total, or None
    top: Decimal  # the value at the top of the plot: the last tick
    ticks: tuple[tuple[float, Decimal, str], ...]  # (y, value, label) of the axis labels
    base_y: float
    left: int
    right: float


# At most this many steps up the axis (so at most five labels, 0 included).
TICK_STEPS = 4


def axis_ticks(maximum: Decimal, steps: int = TICK_STEPS) -> tuple[Decimal, ...]:
    """Round values for an axis from 0 up to the first at or above `maximum`: evenly spaced
    by the smallest step of 1, 2 or 5 × 10^n that needs at most `steps` steps, so every
    label is a round number whatever the data (docs/portal.md, "Pages"). A maximum of 0
    (or less) gives 0 and 1."""
    if maximum <= 0:
        return (Decimal(0), Decimal(1))
    raw = maximum / steps
    exponent = raw.adjusted()  # raw = d.ddd × 10^exponent
    step = Decimal(10).scaleb(exponent)
    for multiple in (1, 2, 5, 10):
        step = Decimal(multiple).scaleb(exponent)
        if step >= raw:
            break
    count = math.ceil(maximum / step)
    return tuple(step * k for k in range(count + 1))


def tick_label(value: Decimal, step: Decimal) -> str:
    """`value` with thousands separators and as many decimals as the step (the first tick
    after 0) has: 12,000; 2.5; 0.05."""
    places = max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]
    return f"{value:,.{places}f}"


def _scale(top: Decimal, value: Decimal) -> float:
    plot = HEIGHT - TOP - BOTTOM
    if top <= 0:
        return float(HEIGHT - BOTTOM)
    return HEIGHT - BOTTOM - float(value / top) * plot


def usage_chart(
    days: list[date],
    values: dict[date, Decimal],
    *,
    limit: Decimal | None,
    limit_period: str | None,
    today: date | None = None,
) -> UsageChart:
    """`today`: the running total stops there (the days after it have not happened)."""
    daily = [values.get(day, Decimal(0)) for day in days]
    running: list[Decimal] = []
    total = Decimal(0)
    for value in daily:
        total += value
        running.append(total)
    cumulative = limit is not None and limit_period in ("month", "year")
    lined = limit is not None and limit_period in ("month", "year", "day")
    candidates = [*daily, Decimal(0)]
    if cumulative:
        candidates.extend(running)
    if lined and limit is not None:
        candidates.append(limit)
    marks = axis_ticks(max(candidates))
    top = marks[-1]
    step = (WIDTH - LEFT - RIGHT) / max(1, len(days))
    bars = tuple(
        Bar(
            day=day,
            value=value,
            x=LEFT + i * step + step * 0.15,
            y=_scale(top, value),
            width=step * 0.7,
            height=(HEIGHT - BOTTOM) - _scale(top, value),
        )
        for i, (day, value) in enumerate(zip(days, daily, strict=True))
    )
    lines: tuple[Line, ...] = ()
    if lined and limit is not None:
        eighty = limit * Decimal("0.8")
        lines = (
            Line("limit", limit, _scale(top, limit)),
            Line("80 %", eighty, _scale(top, eighty)),
        )
    points = None
    if cumulative:
        points = " ".join(
            f"{LEFT + (i + 0.5) * step:.1f},{_scale(top, value):.1f}"
            for i, (day, value) in enumerate(zip(days, running, strict=True))
            if today is None or day <= today
        )
    ticks = tuple((_scale(top, mark), mark, tick_label(mark, marks[1])) for mark in marks)
    return UsageChart(
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        lines=lines,
        running=points,
        top=top,
        ticks=ticks,
        base_y=HEIGHT - BOTTOM,
        left=LEFT,
        right=WIDTH - RIGHT,
    )


NODE_W, NODE_H, ROW = 170, 26, 36
# Plans, then add-ons below them, on the left; features on the right. Nothing lies between a
# source and its features, so every edge visibly starts at its own node (docs/portal.md).
SOURCE_X, FEATURE_X, GRAPH_TOP = 10, 400, 30


@dataclass(frozen=True)
class Node:
    key: str  # kind:name
    kind: str
    name: str
    state: str
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    kind: str
    state: str
    path: str  # SVG path data, from the source (a feature that needs: from that one)
    source: str
    target: str


@dataclass(frozen=True)
class GraphLayout:
    width: int
    height: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    labels: tuple[tuple[str, int, int], ...]  # (text, x, y) of the column headings
    node_w: int = NODE_W
    node_h: int = NODE_H


def graph_layout(graph: Graph) -> GraphLayout:
    placed: dict[str, Node] = {}
    kinds = {kind: [n for n in graph.nodes if n[0] == kind] for kind in ("plan", "addon")}
    labels = [("Plans", SOURCE_X, 18), ("Features", FEATURE_X, 18)]
    y = GRAPH_TOP
    for kind, name, state in kinds["plan"]:
        placed[f"{kind}:{name}"] = Node(f"{kind}:{name}", kind, name, state, SOURCE_X, y)
        y += ROW
    if kinds["addon"]:
        y += ROW // 2
        labels.append(("Add-ons", SOURCE_X, y - 8))
    for kind, name, state in kinds["addon"]:
        placed[f"{kind}:{name}"] = Node(f"{kind}:{name}", kind, name, state, SOURCE_X, y)
        y += ROW
    bottom = y
    y = GRAPH_TOP
    for kind, name, state in (n for n in graph.nodes if n[0] == "feature"):
        placed[f"{kind}:{name}"] = Node(f"{kind}:{name}", kind, name, state, FEATURE_X, y)
        y += ROW
    bottom = max(bottom, y)
    edges = []
    right = FEATURE_X + NODE_W
    # Drawn in order of emphasis: plain edges first, so the highlighted ones lie on top.
    order = {"other": 0, "requires": 1, "held": 2, "upgrade": 3}
    for kind, source, target, state in sorted(graph.edges, key=lambda e: order[e[3]]):
        a, b = placed.get(source), placed.get(target)
        if a is None or b is None:
            continue
        if kind == "requires":  # feature to the feature it needs: an arc right of the column
            x = a.x + NODE_W
            ya, yb = a.y + NODE_H / 2, b.y + NODE_H / 2
            bulge = x + 30 + abs(ya - yb) / 6
            right = max(right, math.ceil(bulge))
            path = f"M{x},{ya:.0f} C{bulge:.0f},{ya:.0f} {bulge:.0f},{yb:.0f} {x + 4},{yb:.0f}"
        else:
            x1, y1 = a.x + NODE_W, a.y + NODE_H / 2
            x2, y2 = b.x, b.y + NODE_H / 2
            mid = (x1 + x2) / 2
            path = f"M{x1},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2},{y2:.0f}"
        edges.append(Edge(kind, state, path, source, target))
    return GraphLayout(right + 10, bottom + 10, tuple(placed.values()), tuple(edges), tuple(labels))
