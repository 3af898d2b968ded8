"""The portal's pure parts: usage chart geometry, upgrade paths and the feature graph."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.portal import charts, upgrades, wording
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


ROUND_STEPS = {1, 2, 5}


@settings(max_examples=200)
@given(
    st.one_of(
        st.integers(min_value=0, max_value=10**12).map(Decimal),
        st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False),
    )
)
def test_axis_ticks_are_round_steps_from_zero_past_the_maximum(maximum: Decimal) -> None:
    ticks = charts.axis_ticks(maximum)
    assert ticks[0] == 0 and ticks[-1] >= maximum and 2 <= len(ticks) <= 5
    step = ticks[1] - ticks[0]
    assert all(b - a == step for a, b in zip(ticks, ticks[1:], strict=False))
    digits = step.normalize().as_tuple().digits
    assert len(digits) == 1 and digits[0] in ROUND_STEPS, step  # 1, 2 or 5 × 10^n
    assert ticks[-1] - step < maximum or maximum == 0  # no empty step above the maximum
    labels = [charts.tick_label(t, step) for t in ticks]
    assert len(set(labels)) == len(labels)  # readable: no two alike
    for label, tick in zip(labels, ticks, strict=True):
        assert Decimal(label.replace(",", "")) == tick


def test_axis_labels_examples() -> None:
    def labels(maximum: str) -> list[str]:
        ticks = charts.axis_ticks(Decimal(maximum))
        return [charts.tick_label(t, ticks[1]) for t in ticks]

    assert labels("0") == ["0", "1"]
    assert labels("78") == ["0", "20", "40", "60", "80"]
    assert labels("86.9") == ["0", "50", "100"]
    assert labels("110000") == ["0", "50,000", "100,000", "150,000"]
    assert labels("1234") == ["0", "500", "1,000", "1,500"]
    assert labels("0.3") == ["0.0", "0.1", "0.2", "0.3"]
    assert labels("1") == ["0.0", "0.5", "1.0"]
    chart = charts.usage_chart(DAYS, {DAYS[0]: Decimal(78)}, limit=None, limit_period=None)
    assert [label for _, _, label in chart.ticks] == ["0", "20", "40", "60", "80"]
    assert chart.top == 80  # the last tick is the top of the plot


def test_time_left_says_hours_or_minutes_under_a_day() -> None:
    assert wording.time_left(9.5 * 86400) == "10 days"
    assert wording.time_left(2 * 86400) == "2 days"
    assert wording.time_left(2.5 * 86400 - 1) == "2 days"
    assert wording.time_left(2.5 * 86400) == "3 days"
    assert wording.time_left(86400) == "24 hours"
    assert wording.time_left(2 * 86400 - 1) == "47 hours"
    assert wording.time_left(3599) == "1 hour"  # 59 minutes 59 seconds: not "60 minutes"
    assert wording.time_left(3540) == "59 minutes"
    assert wording.time_left(3 * 3600 + 1200) == "3 hours"
    assert wording.time_left(5400) == "1 hour 30 minutes"
    assert wording.time_left(3600) == "1 hour"
    assert wording.time_left(2400) == "40 minutes"
    assert wording.time_left(5) == "1 minute"


def test_moments_and_line_sources_in_words() -> None:
    assert wording.moment("2026-12-03T14:05:59.000000Z") == "3 December 2026 at 14:05 UTC"
    meter = wording.source(
        "meter:api_calls",
        {
            "revisions": [1],
            "policy_versions": [1, 2],
            "plan": "team",
            "start": "2026-12-01T00:00:00.000000Z",
            "end": "2026-12-04T00:00:00.000000Z",
            "meter": "api_calls",
            "events": 1234,
            "total": "5678",
            "included": 0,
        },
    )
    assert meter == (
        "meter api_calls, 1,234 events, total 5,678, 2026-12-01 → 2026-12-03; "
        "plan team, policy versions 1, 2, contract revision 1"
    )
    seats = wording.source("seats", {"basis": "peak", "held": "5", "model": "named"})
    assert seats.startswith("5 seats held (peak)") and "{" not in seats
    credits = wording.source(
        "credits",
        {"charged": "4.00", "lines": ["meter:api_calls"], "grants": [{"grant": "g1"}]},
    )
    assert credits == "on meter:api_calls, charged 4.00, grants grant g1"  # unknown keys too


def test_requirements_say_whether_each_is_met() -> None:
    verdicts = {
        "audit_log": {"feature": "audit_log", "allowed": False, "reason": "usage_limit_reached"},
        "sso": {"feature": "sso", "allowed": False, "reason": "feature_not_in_plan"},
        "scim": {"feature": "scim", "requires": ["audit_log", "sso"], "reason": "ok"},
    }
    assert upgrades.requirements(verdicts["scim"], verdicts) == [
        {"feature": "audit_log", "met": True},  # held: its meter does not unmeet it
        {"feature": "sso", "met": False},
    ]
    assert upgrades.requirements(verdicts["sso"], verdicts) == []
