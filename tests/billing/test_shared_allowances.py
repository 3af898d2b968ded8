"""One allowance shared by several meters, drawn in the order the policy lists them, in the
pricing core (docs/billing.md, "Shared allowances")."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.billing.allowances import draw
from allotment.billing.pricing import price
from allotment.policy.catalog import SharedAllowance
from tests.billing import MAY, by_code, pricing, segment

D = Decimal

CI = """
currency: USD
features:
  ci: {}
meters:
  linux_minutes: {event_type: ci.linux, aggregation: sum, property: minutes}
  windows_minutes: {event_type: ci.windows, aggregation: sum, property: minutes}
plans:
  team:
    features: [ci]
    price:
      meters:
        linux_minutes: {tiers: [{unit: "0.008"}]}
        windows_minutes: {included: 100, tiers: [{unit: "0.016"}]}
      allowances:
        ci_minutes:
          included: 3000
          draw:
            - {meter: linux_minutes}
            - {meter: windows_minutes, rate: 2}
"""
TEAM = segment("team", policy=CI)


def month(linux: int, windows: int) -> dict[str, tuple[Decimal, Decimal]]:
    events = [(MAY, "linux_minutes", linux), (MAY, "windows_minutes", windows)]
    lines = by_code(price(pricing(TEAM, events=events)))
    return {code: (line.quantity, line.amount) for code, line in lines.items()}


def test_the_first_meter_draws_first_and_the_second_takes_what_is_left_at_its_rate() -> None:
    lines = month(linux=2_000, windows=800)  # windows: 100 its own, 700 billable
    assert lines["meter:linux_minutes"] == (D(0), D("0.00"))
    assert lines["meter:windows_minutes"] == (D(200), D("3.20"))  # 500 covered by 1,000 left


def test_a_spent_allowance_covers_nothing_more() -> None:
    lines = month(linux=5_400, windows=600)
    assert lines["meter:linux_minutes"] == (D(2400), D("19.20"))
    assert lines["meter:windows_minutes"] == (D(500), D("8.00"))


def test_the_line_says_what_the_allowance_covered() -> None:
    events = [(MAY, "linux_minutes", 2_999), (MAY, "windows_minutes", 102)]
    line = by_code(price(pricing(TEAM, events=events)))["meter:windows_minutes"]
    assert line.quantity == D("1.5")  # 1 unit left covers ½ a Windows minute
    assert line.source["shared"] == {
        "allowance": "ci_minutes",
        "rate": "2",
        "covered": "0.5",
        "left_before": "1",
        "left_after": "0",
    }


@settings(max_examples=50, deadline=None)
@given(
    included=st.integers(0, 10_000),
    rates=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    used=st.lists(st.integers(0, 5_000), min_size=4, max_size=4),
)
def test_the_allowance_is_never_overdrawn_and_covers_in_order(
    included: int, rates: list[int], used: list[int]
) -> None:
    meters = [f"m{i}" for i in range(len(rates))]
    allowance = SharedAllowance("shared", included, tuple(zip(meters, rates, strict=True)))
    billable = {meter: Fraction(used[i]) for i, meter in enumerate(meters)}
    drawn = draw([allowance], billable)
    spent = sum((drawn[m].covered * drawn[m].rate for m in meters), Fraction(0))
    assert spent <= included
    for i, meter in enumerate(meters):
        assert 0 <= drawn[meter].covered <= billable[meter]
        # a meter left uncovered units only once the allowance was spent
        if drawn[meter].covered < billable[meter]:
            assert drawn[meter].left_after == 0
            assert all(drawn[m].covered == 0 for m in meters[i + 1 :])
