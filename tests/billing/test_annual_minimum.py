"""A minimum per contract year (`price.minimum_period: year`) in the pricing core: a 0.00
line that shows where the year stands each month, the true-up in the month the contract
year (or the contract) ends, and months holding an anniversary priced one contract year at a
time (docs/billing.md, "minimum").

YEARLY's committed plan: 100.00 a month, calls at 0.01, a minimum of 2,000.00 a contract year.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.billing.measure import money
from allotment.billing.priced import Priced, Segment
from allotment.billing.pricing import price
from tests.billing import pricing, segment

D = Decimal

YEARLY = """
currency: USD
features:
  api: {meter: api_calls}
meters:
  api_calls: {event_type: api.call, aggregation: sum, property: count}
plans:
  committed:
    features: [api]
    price:
      base: "100.00"
      minimum: "2000.00"
      minimum_period: year
      meters: {api_calls: {included: 0, tiers: [{unit: "0.01"}]}}
"""

START = datetime(2026, 3, 15, tzinfo=UTC)
UNTIL = datetime(2030, 1, 1, tzinfo=UTC)
COMMITTED = segment("committed", START, UNTIL, policy=YEARLY)


def contract(ends: datetime | None = None) -> Segment:
    return dataclasses.replace(
        COMMITTED, end=ends or UNTIL, contract_start=START, contract_end=ends
    )


def at(year: int, month: int, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def month(
    seg: Segment, year: int, number: int, before: dict[int, Decimal] | None = None, calls: int = 0
) -> Priced:
    start = at(year, number)
    end = at(year + number // 12, number % 12 + 1)
    data = pricing(seg, start=start, end=end, events=[(start, "api_calls", calls)] if calls else [])
    return price(dataclasses.replace(data, committed_before=before or {}))


def minimum(priced: Priced) -> list[tuple[int, Decimal, bool]]:
    return [
        (line.source["contract_year"], line.amount, line.source["trued_up"])
        for line in priced.lines
        if line.code == "minimum"
    ]


def test_a_month_inside_the_year_shows_where_it_stands_at_0() -> None:
    june = month(contract(), 2026, 6, before={1: D("250.00")}, calls=5_000)
    line = next(line for line in june.lines if line.code == "minimum")
    assert (line.quantity, line.amount) == (D("0.00"), D("0.00"))
    assert line.source["committed_to_date"] == "400.00"  # 250.00 before + 100.00 + 50.00
    assert line.source["remaining"] == "1600.00"
    assert line.source["due"] == "2027-03-15T00:00:00.000000Z"
    assert june.committed == {1: D("150.00")}


def test_the_true_up_falls_in_the_month_the_contract_year_ends() -> None:
    """March 2027 holds the anniversary: its lines come in two groups, one per contract
    year; the true-up is year 1's, in its group, and year 2's line opens at 0.00."""
    march = month(contract(), 2027, 3, before={1: D("1150.00"), 2: D(0)})
    bases = [line.amount for line in march.lines if line.code == "base"]
    assert bases == [D("45.16"), D("54.84")]  # 14 and 17 of 31 days
    assert minimum(march) == [(1, D("804.84"), True), (2, D("0.00"), False)]
    assert march.committed == {1: D("45.16"), 2: D("54.84")}


def test_a_contract_that_ends_sooner_is_trued_up_in_its_last_month() -> None:
    ends = at(2026, 9, 10)
    september = month(contract(ends), 2026, 9, before={1: D("550.00")})
    assert minimum(september) == [(1, D("1420.00"), True)]  # 2000 − 550 − 9/30 × 100
    assert september.lines[-1].source["due"] == "2026-09-10T00:00:00.000000Z"


@settings(max_examples=50, deadline=None)
@given(
    before=st.integers(0, 400_000),  # cents
    calls=st.integers(0, 300_000),
)
def test_the_true_up_is_the_minimum_less_the_years_committed_lines(before: int, calls: int) -> None:
    committed_before = D(before) / 100
    february = month(contract(), 2027, 2, calls=calls)
    assert minimum(february)[0][1] == D("0.00")
    march = month(contract(), 2027, 3, before={1: committed_before}, calls=calls)
    year_one = [
        line
        for line in march.lines
        if line.source["start"] < "2027-03-15" and line.code != "minimum"
    ]
    spent = committed_before + sum(line.amount for line in year_one)
    expected = money(max(Fraction(0), Fraction(2000) - Fraction(spent)), 2)
    assert minimum(march)[0] == (1, expected, True)
