"""The portal's pure parts: usage chart geometry, upgrade paths and the feature graph."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.portal import charts, upgrades
from tests.factories.policies_for_contracts import demo_catalog

DAYS = [date(2026, 12, 1) + timedelta(days=n) for n in range(31)]


@settings(max_examples=50)
@given(
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=31, max_size=31),
    st.one_of(st.none(), st.integers(min_value=1, max_value=10**10)),
    st.sampled_from(["month", "day", "hour"]),
)
def test_bars_and_lines_stay_in_the_plot_and_in_order(
    values: list[int], limit: int | None, period: str
) -> None:
    chart = charts.usage_chart(
        DAYS,
        {day: Decimal(v) for day, v in zip(DAYS, values, strict=True)},
        limit=Decimal(limit) if limit is not None else None,
        limit_period=period if limit is not None else None,
    )
    assert len(chart.bars) == 31
    for bar in chart.bars:
        assert 0 <= bar.y <= chart.base_y and bar.height >= 0
        assert abs(bar.y + bar.height - chart.base_y) < 1e-6
    # A taller bar is a larger value.
    ordered = sorted(chart.bars, key=lambda b: b.value)
    assert all(a.height <= b.height for a, b in zip(ordered, ordered[1:], strict=False))
    if limit is not None and period in ("month", "day"):
        limit_line, eighty = chart.lines
        assert limit_line.value == limit and eighty.value == Decimal(limit) * Decimal("0.8")
        assert 0 <= limit_line.y < eighty.y <= chart.base_y  # the limit is the higher line
        assert (chart.running is not None) == (period == "month")
    else:
        assert chart.lines == ()


def test_unlock_names_the_plans_and_addons_that_grant_a_feature_and_its_needs() -> None:
    catalog = demo_catalog()
    team = {"plan": "team", "addons": []}
    assert upgrades.unlock(catalog, team, "sso") == upgrades.Unlock(("enterprise",), ())
    assert upgrades.unlock(catalog, team, "audit_log") == upgrades.Unlock(
        ("enterprise",), ("audit_pack",)
    )
    # Holding audit_pack, sso still needs the enterprise plan (the add-on lacks sso itself).
    held = {"plan": "team", "addons": ["audit_pack"]}
    assert upgrades.unlock(catalog, held, "sso").plans == ("enterprise",)


def test_the_graph_marks_the_customers_plan_and_the_upgrade_paths() -> None:
    catalog = demo_catalog()
    document = {
        "contract": {"plan": "team", "addons": []},
        "features": [
            {
                "feature": name,
                "allowed": name in catalog.plans["team"].features,
                "reason": "ok" if name in catalog.plans["team"].features else "feature_not_in_plan",
            }
            for name in catalog.features
        ],
    }
    graph = upgrades.graph(catalog, document)
    states = {(kind, name): state for kind, name, state in graph.nodes}
    assert states[("plan", "team")] == "held"
    assert states[("plan", "enterprise")] == "upgrade"
    assert states[("addon", "audit_pack")] == "upgrade"
    assert states[("feature", "sso")] == "denied" and states[("feature", "api")] == "allowed"
    assert ("grants", "plan:enterprise", "feature:sso", "upgrade") in graph.edges
    assert ("requires", "feature:scim", "feature:sso", "requires") in graph.edges
    layout = charts.graph_layout(graph)
    assert len(layout.nodes) == len(graph.nodes) and len(layout.edges) == len(graph.edges)
    # Every grant starts at its own node's right edge, and no box lies between a plan or
    # add-on and the features it grants, so no line seems to leave another node.
    at = {node.key: node for node in layout.nodes}
    for edge in layout.edges:
        start = re.match(r"M([\d.]+),([\d.]+)", edge.path)
        assert start is not None
        source = at[edge.source]
        assert float(start.group(1)) == source.x + layout.node_w, edge
        assert source.y <= float(start.group(2)) <= source.y + layout.node_h, edge
        if edge.kind == "grants":
            end = at[edge.target].x
            between = [n for n in layout.nodes if source.x < n.x < end]
            assert between == [], edge
    assert max(n.x for n in layout.nodes) + layout.node_w < layout.width
