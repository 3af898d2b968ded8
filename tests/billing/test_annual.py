"""Annual terms in the pricing core: a year's fee once per contract year, a yearly allowance
consumed across the months of the contract year, contract years at their boundaries
(docs/billing.md, "Annual terms"; docs/contracts.md, "Contract years").

ANNUAL's yearly plan: base 1,200.00 a year; api_calls 10,000 included a contract year, then
up to 50,000 at 0.01 with a flat 5.00, then 0.005; the support add-on 240.00 a year.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.billing.annual import annual_dues
from allotment.billing.measure import money
from allotment.billing.priced import Priced, Segment
from allotment.billing.pricing import price
from allotment.billing.tiers import meter_priced
from allotment.contracts.years import anniversary, contract_year, pieces
from tests.billing import catalog, pricing, segment

D = Decimal

ANNUAL = """
currency: USD
features:
  api: {meter: api_calls}
  audit_log: {}
meters:
  api_calls: {event_type: api.call, aggregation: sum, property: count}
plans:
  yearly:
    features: [api]
    limits: {api_calls: {limit: 1000000, period: year}}
    price:
      base: "1200.00"
      interval: year
      meters:
        api_calls:
          included: 10000
          period: year
          tiers:
            - {up_to: 50000, unit: "0.01", flat: "5.00"}
            - {unit: "0.005"}
  packaged:
    extends: yearly
    price: {meters: {api_calls: {package: {size: 1000, price: "4.00"}}}}
  monthly:
    features: [api]
    price: {base: "100.00"}
addons:
  support: {features: [audit_log], price: "240.00", interval: year}
"""

START = datetime(2026, 3, 15, 10, 0, tzinfo=UTC)


def at(year: int, month: int, day: int = 1, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def month(start: datetime) -> tuple[datetime, datetime]:
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def annual_segment(
    plan: str = "yearly",
    starts_at: datetime = START,
    end: datetime | None = None,
    addons: tuple[str, ...] = (),
    until: datetime = datetime(2030, 1, 1, tzinfo=UTC),
) -> Segment:
    term_end = end or until
    built = segment(plan, starts_at, term_end, addons=addons, policy=ANNUAL)
    dues = annual_dues(
        [(starts_at, plan, "standard", addons)], starts_at=starts_at, ends_at=end, until=until
    )
    return dataclasses.replace(built, contract_start=starts_at, dues=dues)


def preview(
    first: datetime,
    seg: Segment,
    events: list[tuple[datetime, str, int]] = [],  # noqa: B006
) -> Priced:
    start, end = month(first)
    return price(pricing(seg, events=events, start=start, end=end))


# -- the annual fee --------------------------------------------------------------------------


def test_annual_fee_is_charged_in_full_in_the_month_the_contract_year_starts() -> None:
    seg = annual_segment(addons=("support",))
    march = preview(at(2026, 3), seg)
    base = next(line for line in march.lines if line.code == "base")
    assert (base.quantity, base.unit, base.unit_price, base.amount) == (
        D("1"),
        "year",
        D("1200.00"),
        D("1200.00"),
    )
    assert base.source["contract_year"] == 1
    assert base.source["year_start"] == "2026-03-15T10:00:00.000000Z"
    assert base.source["year_end"] == "2027-03-15T10:00:00.000000Z"
    support = next(line for line in march.lines if line.code == "addon:support")
    assert (support.amount, support.source["contract_year"]) == (D("240.00"), 1)
    assert march.subtotal == D("1440.00")


def test_no_annual_fee_in_the_other_months_of_the_contract_year() -> None:
    seg = annual_segment(addons=("support",))
    for first in (at(2026, 4), at(2026, 12), at(2027, 2)):
        codes = [line.code for line in preview(first, seg).lines]
        assert "base" not in codes and "addon:support" not in codes


def test_the_second_contract_year_is_charged_at_the_anniversary() -> None:
    priced = preview(at(2027, 3), annual_segment())
    (base,) = [line for line in priced.lines if line.code == "base"]
    assert base.source["contract_year"] == 2
    assert base.source["due"] == "2027-03-15T10:00:00.000000Z"


def test_a_contract_year_starting_feb_29_has_its_anniversary_on_feb_28() -> None:
    leap = datetime(2028, 2, 29, 12, tzinfo=UTC)
    seg = annual_segment(starts_at=leap, until=at(2033, 1))
    (base,) = [line for line in preview(at(2029, 2), seg).lines if line.code == "base"]
    assert (base.source["contract_year"], base.source["due"]) == (2, "2029-02-28T12:00:00.000000Z")
    (base,) = [line for line in preview(at(2032, 2), seg).lines if line.code == "base"]
    assert (base.source["contract_year"], base.source["due"]) == (5, "2032-02-29T12:00:00.000000Z")


def test_a_plan_brought_in_mid_year_is_charged_at_the_amendment() -> None:
    amended = at(2026, 7, 10)
    dues = annual_dues(
        [(START, "monthly", "standard", ()), (amended, "yearly", "standard", ())],
        starts_at=START,
        ends_at=None,
        until=at(2028, 1),
    )
    assert dues.plans["yearly"] == (amended, datetime(2027, 3, 15, 10, tzinfo=UTC))
    assert dues.plans["monthly"] == (START,)


def test_a_trial_is_not_charged_an_annual_fee_until_it_converts() -> None:
    converted = at(2026, 4, 14)
    dues = annual_dues(
        [(START, "yearly", "trial", ()), (converted, "yearly", "standard", ())],
        starts_at=START,
        ends_at=None,
        until=at(2027, 1),
    )
    assert dues.plans["yearly"] == (converted,)


# -- the yearly allowance ----------------------------------------------------------------------

EVENTS = [
    (at(2026, 3, 20), "api_calls", 6000),
    (at(2026, 4, 10), "api_calls", 5000),
    (at(2026, 5, 10), "api_calls", 3000),
]


def meter_lines(priced: Priced) -> list[tuple[Decimal, Decimal, int]]:
    return [
        (line.quantity, line.amount, line.source["contract_year"])
        for line in priced.lines
        if line.code == "meter:api_calls"
    ]


def test_the_months_within_the_allowance_bill_nothing() -> None:
    assert meter_lines(preview(at(2026, 3), annual_segment(), EVENTS)) == [(D("0"), D("0.00"), 1)]


def test_the_month_that_crosses_the_allowance_shows_the_overage() -> None:
    # 6,000 before April, 11,000 after: 1,000 over the 10,000 included, at 0.01 plus the
    # first tier's flat 5.00 = 15.00.
    priced = preview(at(2026, 4), annual_segment(), EVENTS)
    (line,) = [line for line in priced.lines if line.code == "meter:api_calls"]
    assert (line.quantity, line.amount) == (D("1000"), D("15.00"))
    assert line.source["year_before"] == "6000"
    assert line.source["year_to_date"] == "11000"
    assert (line.source["charged_before"], line.source["charged_to_date"]) == ("0.00", "15.00")


def test_a_month_after_the_crossing_bills_its_own_units() -> None:
    # 11,000 → 14,000: 3,000 more at 0.01 = 30.00 (the flat fee was charged in April).
    assert meter_lines(preview(at(2026, 5), annual_segment(), EVENTS)) == [
        (D("3000"), D("30.00"), 1)
    ]


def test_a_month_split_by_the_anniversary_has_a_line_per_contract_year() -> None:
    events = [
        *EVENTS,
        (at(2027, 3, 10), "api_calls", 2000),  # year 1: 14,000 → 16,000
        (at(2027, 3, 20), "api_calls", 10500),  # year 2: 500 over a fresh allowance
    ]
    assert meter_lines(preview(at(2027, 3), annual_segment(), events)) == [
        (D("2000"), D("20.00"), 1),
        (D("500"), D("10.00"), 2),  # 5.00 + 500 × 0.01
    ]


def test_a_yearly_package_meter_bills_the_packages_each_month_starts() -> None:
    seg = annual_segment("packaged")
    events = [(at(2026, 4, 2), "api_calls", 10500), (at(2026, 5, 2), "api_calls", 1000)]
    assert meter_lines(preview(at(2026, 4), seg, events)) == [(D("1"), D("4.00"), 1)]
    assert meter_lines(preview(at(2026, 5), seg, events)) == [(D("1"), D("4.00"), 1)]


# -- properties --------------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)
leap_days = st.sampled_from([2000, 2004, 2024, 2028, 2096]).map(
    lambda year: datetime(year, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
)


@given(
    starts_at=st.one_of(instants, leap_days),
    later=st.timedeltas(timedelta(0), timedelta(days=4000)),
)
def test_every_instant_falls_in_exactly_one_contract_year(
    starts_at: datetime, later: timedelta
) -> None:
    moment = starts_at + later
    year = contract_year(starts_at, moment)
    assert year.start <= moment < year.end
    assert year.start == anniversary(starts_at, year.number - 1)
    assert year.end == anniversary(starts_at, year.number)
    last = year.end - timedelta(microseconds=1)
    assert contract_year(starts_at, last) == year
    assert contract_year(starts_at, year.end).number == year.number + 1
    if starts_at.month == 2 and starts_at.day == 29:
        assert year.start.day in (28, 29) and year.start.month == 2


@given(
    starts_at=st.one_of(instants, leap_days),
    start=st.timedeltas(timedelta(0), timedelta(days=900)),
    length=st.timedeltas(timedelta(0), timedelta(days=900)),
)
def test_pieces_tile_a_range_at_the_anniversaries(
    starts_at: datetime, start: timedelta, length: timedelta
) -> None:
    a, b = starts_at + start, starts_at + start + length
    found = pieces(starts_at, a, b)
    assert [p[1] for p in found[1:]] == [p[2] for p in found[:-1]]
    if found:
        assert (found[0][1], found[-1][2]) == (a, b)
    for year, lower, upper in found:
        assert year.start <= lower < upper <= year.end


years_events = st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 40_000)), max_size=12
)


@settings(max_examples=60, deadline=None)
@given(
    starts_at=st.one_of(instants, leap_days),
    events=years_events,
    plan=st.sampled_from(["yearly", "packaged"]),
)
def test_a_year_billed_month_by_month_adds_up_to_the_year_priced_at_once(
    starts_at: datetime, events: list[tuple[float, int]], plan: str
) -> None:
    year = contract_year(starts_at, starts_at)
    span = year.end - year.start
    last = year.end - timedelta(microseconds=1)  # a float share may round up to the end
    placed = [(min(year.start + span * share, last), "api_calls", count) for share, count in events]
    seg = annual_segment(plan, starts_at=starts_at, end=year.end, until=year.end)
    total = D(0)
    first = datetime(starts_at.year, starts_at.month, 1, tzinfo=UTC)
    while first < year.end:
        for line in preview(first, seg, placed).lines:
            if line.code == "meter:api_calls":
                assert line.source["contract_year"] == 1 and line.amount >= 0
                total += line.amount
        first = month(first)[1]
    used = Fraction(sum(count for _, _, count in placed))
    at_once = meter_priced(used, catalog(ANNUAL).plans[plan].price.meters["api_calls"], places=6)
    assert total == money(at_once.amount, 2)


@settings(max_examples=60, deadline=None)
@given(starts_at=st.one_of(instants, leap_days), years=st.integers(1, 4))
def test_the_annual_fee_appears_once_per_contract_year_whatever_the_month_split(
    starts_at: datetime, years: int
) -> None:
    until = anniversary(starts_at, years)
    seg = annual_segment(starts_at=starts_at, end=until, until=until, addons=("support",))
    seen: dict[str, list[int]] = {"base": [], "addon:support": []}
    first = datetime(starts_at.year, starts_at.month, 1, tzinfo=UTC)
    while first < until:
        for line in preview(first, seg).lines:
            if line.code in seen:
                seen[line.code].append(line.source["contract_year"])
        first = month(first)[1]
    assert seen == {"base": list(range(1, years + 1)), "addon:support": list(range(1, years + 1))}


@settings(max_examples=60, deadline=None)
@given(
    starts_at=st.one_of(instants, leap_days),
    cuts=st.lists(st.floats(0, 1, exclude_min=True, exclude_max=True), max_size=6),
)
def test_the_annual_fee_appears_once_per_year_whatever_the_amendments_split(
    starts_at: datetime, cuts: list[float]
) -> None:
    until = anniversary(starts_at, 2)
    span = until - starts_at
    bounds = sorted({starts_at, until, *(starts_at + span * share for share in cuts)})
    bounds = [b for b in bounds if starts_at <= b <= until]
    revisions = [(b, "yearly", "standard", ()) for b in bounds[:-1]]
    dues = annual_dues(revisions, starts_at=starts_at, ends_at=until, until=until)
    segments = [
        dataclasses.replace(
            segment("yearly", a, b, revision=index + 1, policy=ANNUAL, seat_limit=index),
            contract_start=starts_at,
            dues=dues,
        )
        for index, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))
        if b > a
    ]
    years: list[int] = []
    first = datetime(starts_at.year, starts_at.month, 1, tzinfo=UTC)
    while first < until:
        start, end = month(first)
        for line in price(pricing(*segments, start=start, end=end)).lines:
            if line.code == "base":
                years.append(line.source["contract_year"])
        first = end
    assert years == [1, 2]
