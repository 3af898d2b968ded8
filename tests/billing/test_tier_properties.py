"""Properties of tier modes, packages and the minimum (billing/tiers.py, commitments.py).

volume against graduated, for the same tiers, included units and total:
    unit prices non-increasing (p1 ≥ p2 ≥ …), flat fees ≥ 0   →  volume ≤ graduated
    unit prices non-decreasing, no flat fees                   →  volume ≥ graduated
    equal whenever the billable units fall in one tier and no flat fee is set
  ("volume never below graduated when tier prices fall" is false: falling prices make volume
  the cheaper mode, since graduated prices every lower unit at a higher rate; see
  test_falling_prices_make_volume_strictly_cheaper for an instance.)
a package line is ceil(billable / size) × price, exactly
a tier's flat fee is counted once per tier reached, however the usage arrived
the minimum line is exactly max(0, minimum − the lines before it) over a whole month
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.billing.priced import Priced, Segment
from allotment.billing.pricing import price
from allotment.billing.tiers import graduated, reached_tier, volume
from allotment.policy.catalog import MeterPrice, Package, Tier
from tests.billing import by_code, held, may, pricing, segment

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

units = st.integers(0, 100_000).map(lambda n: Decimal(n).scaleb(-4))  # 0 to 10, 4 places
fees = st.integers(0, 10_000).map(lambda n: Decimal(n).scaleb(-2))  # 0 to 100.00


@st.composite
def tier_lists(draw: st.DrawFn, *, order: str = "any", flats: bool = True) -> list[Tier]:
    count = draw(st.integers(1, 4))
    bounds = sorted(draw(st.sets(st.integers(1, 50_000), min_size=count - 1, max_size=count - 1)))
    last_bound = draw(st.one_of(st.none(), st.integers(50_001, 60_000)))
    prices = [draw(units) for _ in range(count)]
    if order == "falling":
        prices.sort(reverse=True)
    elif order == "rising":
        prices.sort()
    return [
        Tier(
            up_to=[*bounds, last_bound][index],
            unit=prices[index],
            flat=draw(st.one_of(st.none(), fees)) if flats else None,
        )
        for index in range(count)
    ]


totals = st.one_of(
    st.integers(0, 80_000).map(Fraction),
    st.fractions(0, 80_000, max_denominator=1000),
)
includeds = st.integers(0, 20_000).map(Fraction)


@PROPERTY
@given(tiers=tier_lists(order="falling"), total=totals, included=includeds)
def test_falling_prices_never_make_volume_dearer(
    tiers: list[Tier], total: Fraction, included: Fraction
) -> None:
    assert volume(total, included, tiers).amount <= graduated(total, included, tiers).amount


@PROPERTY
@given(tiers=tier_lists(order="rising", flats=False), total=totals, included=includeds)
def test_rising_prices_never_make_volume_cheaper(
    tiers: list[Tier], total: Fraction, included: Fraction
) -> None:
    assert volume(total, included, tiers).amount >= graduated(total, included, tiers).amount


@PROPERTY
@given(tiers=tier_lists(flats=False), total=totals, included=includeds)
def test_the_modes_agree_when_one_tier_prices_every_billable_unit(
    tiers: list[Tier], total: Fraction, included: Fraction
) -> None:
    split = graduated(total, included, tiers)
    used = [row for row in split.source["tiers"] if Decimal(row["quantity"]) > 0]
    if len(used) <= 1:
        assert volume(total, included, tiers).amount == split.amount


def test_falling_prices_make_volume_strictly_cheaper() -> None:
    tiers = [Tier(1000, Decimal("0.02")), Tier(None, Decimal("0.01"))]
    assert graduated(Fraction(3000), Fraction(0), tiers).amount == 40  # 20 + 20
    assert volume(Fraction(3000), Fraction(0), tiers).amount == 30  # 3,000 × 0.01


@PROPERTY
@given(tiers=tier_lists(), total=totals, included=includeds)
def test_a_flat_fee_is_counted_once_per_tier_reached(
    tiers: list[Tier], total: Fraction, included: Fraction
) -> None:
    split = graduated(total, included, tiers)
    rows = split.source["tiers"]
    variable = sum(
        (
            Fraction(Decimal(row["quantity"])) * Fraction(tier.unit)
            for row, tier in zip(rows, tiers, strict=True)
        ),
        Fraction(0),
    )
    reached = [
        tier
        for row, tier in zip(rows, tiers, strict=True)
        if Fraction(Decimal(row["quantity"])) > 0
    ]
    if total.denominator == 1:  # shown quantities are exact for whole units
        flats = sum((Fraction(t.flat) for t in reached if t.flat is not None), Fraction(0))
        assert split.amount == variable + flats
    by_volume = volume(total, included, tiers)
    if total > included:
        tier = tiers[reached_tier(total, tiers)]
        expected = (total - included) * Fraction(tier.unit) + Fraction(tier.flat or 0)
        assert by_volume.amount == expected
    else:
        assert by_volume.amount == 0 == split.amount


@PROPERTY
@given(
    tiers=tier_lists(),
    mode=st.sampled_from(["graduated", "volume"]),
    parts=st.lists(st.integers(1, 20_000), min_size=1, max_size=6),
)
def test_flat_fees_do_not_depend_on_how_the_usage_arrived(
    tiers: list[Tier], mode: str, parts: list[int]
) -> None:
    seg = with_meter(MeterPrice("api_calls", 1000, tuple(tiers), mode=mode))
    one = price(pricing(seg, events=[(may(3), "api_calls", sum(parts))]))
    many = price(pricing(seg, events=[(may(3 + i), "api_calls", n) for i, n in enumerate(parts)]))
    assert meter_amount(one) == meter_amount(many)


@PROPERTY
@given(
    size=st.integers(1, 5000),
    package_price=fees,
    included=st.integers(0, 5000),
    count=st.integers(0, 200_000),
)
def test_a_package_line_is_ceil_of_units_over_size_times_price(
    size: int, package_price: Decimal, included: int, count: int
) -> None:
    meter = MeterPrice("api_calls", included, (), package=Package(size, package_price))
    priced = price(pricing(with_meter(meter), events=[(may(3), "api_calls", count)]))
    packages = math.ceil(max(0, count - included) / size)
    assert meter_amount(priced) == packages * package_price  # whole cents: nothing to round
    line = by_code(priced).get("meter:api_calls")
    if line is None:  # left out: no package started, at a price of zero
        assert packages == 0 and package_price == 0
    else:
        assert (line.quantity, line.unit_price) == (packages, package_price)


@PROPERTY
@given(
    minimum=fees.map(lambda fee: fee * 20),  # up to 2,000.00
    seats=st.integers(0, 15),
    count=st.integers(0, 60_000),
    addons=st.lists(st.sampled_from(["audit_pack", "support", "gratis"]), unique=True),
)
def test_the_minimum_line_is_exactly_the_shortfall_of_a_whole_month(
    minimum: Decimal, seats: int, count: int, addons: list[str]
) -> None:
    base = segment("team", addons=addons)
    plan = base.plan
    committed = dataclasses.replace(plan, price=dataclasses.replace(plan.price, minimum=minimum))
    priced = price(
        pricing(
            dataclasses.replace(base, plan=committed),
            seats=held(seats),
            events=[(may(3), "api_calls", count)],
        )
    )
    codes = [line.code for line in priced.lines]
    before = priced.lines[: codes.index("minimum")]
    shortfall = max(Decimal(0), minimum - sum((line.amount for line in before), Decimal(0)))
    line = by_code(priced)["minimum"]
    assert line.amount == shortfall == line.quantity
    assert line.source["lines"] == [line.code for line in before]
    assert priced.subtotal == max(minimum, priced.subtotal - line.amount)


def meter_amount(priced: Priced) -> Decimal:
    """The meter line's amount; a line left out (nothing counted, no price) is zero."""
    line = by_code(priced).get("meter:api_calls")
    return line.amount if line is not None else Decimal(0)


def with_meter(meter: MeterPrice) -> Segment:
    base = segment("team")
    plan = base.plan
    prices = dataclasses.replace(plan.price, meters={"api_calls": meter})
    return dataclasses.replace(base, plan=dataclasses.replace(plan, price=prices))
