"""Properties of billing/pricing.py over generated months, revisions, seats, leases and usage.

splitting a month between two revisions of one plan changes nothing
splitting it between two plans with equal prices moves each line by < 1 minor unit
a price of zero gives a zero line (and, for a fee over active days, always a line)
the subtotal is the sum of the lines; every amount has exactly the minor unit's digits
the same input prices to the same lines, whatever the order of its intervals
lines come group by group, each group in the documented order; a trial nets to zero
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from random import Random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.billing.priced import Interval, Priced, PricingInput, Segment
from allotment.billing.pricing import price
from allotment.policy.catalog import MeterPrice, Plan, Tier
from tests.billing import catalog, segment, usage

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

MONTHS = [(2026, 2), (2026, 4), (2026, 5), (2028, 2)]  # 28, 30, 31 and 29 days
CURRENCIES = [("USD", 2), ("JPY", 0), ("KWD", 3)]
KINDS = [
    ("standard", None),
    ("trial", None),
    ("educational", "40"),
    ("pilot", "12.5"),
    ("pilot", "33.33"),
]
ADDONS = ["audit_pack", "support", "gratis"]
METERS = ["api_calls", "exports"]
ORDER = ["base", "seats", "burst", "instances", "meter:", "addon:", "credit:", "discount:"]

Event = tuple[datetime, str, int]
Used = dict[str, Any]  # seats, instances, events


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@st.composite
def periods(draw: st.DrawFn) -> tuple[datetime, datetime]:
    return month_bounds(*draw(st.sampled_from(MONTHS)))


def instants(
    start: datetime, end: datetime, spill: timedelta = timedelta(0)
) -> st.SearchStrategy[datetime]:
    """Instants in [start − spill, end + spill], to the microsecond."""
    span = (end - start + 2 * spill) // timedelta(microseconds=1)
    return st.integers(0, span).map(lambda us: start - spill + timedelta(microseconds=us))


@st.composite
def intervals(
    draw: st.DrawFn, start: datetime, end: datetime, *, most: int, weighted: bool
) -> list[Interval]:
    out = []
    for _ in range(draw(st.integers(0, most))):
        begin = draw(instants(start, end, spill=timedelta(days=3)))
        length = draw(st.one_of(st.none(), st.integers(0, 20 * 86_400_000_000)))
        finish = None if length is None else begin + timedelta(microseconds=length)
        weight = draw(st.integers(1, 4)) if weighted else 1
        kind = draw(st.sampled_from(["vm", "cluster", None])) if weighted else None
        out.append(Interval(begin, finish, weight=weight, kind=kind))
    return out


@st.composite
def events(draw: st.DrawFn, start: datetime, end: datetime) -> list[Event]:
    return draw(
        st.lists(
            st.tuples(instants(start, end), st.sampled_from(METERS), st.integers(0, 200_000)),
            max_size=10,
        )
    )


@st.composite
def usage_in(draw: st.DrawFn, start: datetime, end: datetime) -> Used:
    return {
        "seats": draw(intervals(start, end, most=14, weighted=False)),
        "instances": draw(intervals(start, end, most=6, weighted=True)),
        "events": draw(events(start, end)),
    }


def make_input(
    start: datetime,
    end: datetime,
    segments: Iterable[Segment],
    used: Used,
    digits: int = 2,
    currency: str = "USD",
) -> PricingInput:
    return PricingInput(
        period_start=start,
        period_end=end,
        currency=currency,
        minor_digits=digits,
        segments=tuple(segments),
        seats=tuple(used["seats"]),
        instances=tuple(used["instances"]),
        meters=usage(used["events"]),
    )


def minor(digits: int) -> Decimal:
    return Decimal(1).scaleb(-digits)


def total_by_code(priced: Priced) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for line in priced.lines:
        out[line.code] = out.get(line.code, Decimal(0)) + line.amount
    return out


def count_by_code(priced: Priced) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in priced.lines:
        out[line.code] = out.get(line.code, 0) + 1
    return out


def rank(code: str) -> tuple[int, str]:
    for index, prefix in enumerate(ORDER):
        if code == prefix or (prefix.endswith(":") and code.startswith(prefix)):
            return index, code
    raise AssertionError(f"unknown line code {code}")


# -- splitting a month -----------------------------------------------------------------------


@PROPERTY
@given(st.data())
def test_splitting_a_month_between_revisions_of_one_plan_changes_nothing(
    data: st.DataObject,
) -> None:
    start, end = data.draw(periods())
    plan = data.draw(st.sampled_from(sorted(catalog().plans)))
    addons = data.draw(st.lists(st.sampled_from(ADDONS), unique=True))
    kind, discount = data.draw(st.sampled_from(KINDS))
    cut = data.draw(instants(start, end).filter(lambda t: start < t < end))
    used = data.draw(usage_in(start, end))
    digits = data.draw(st.sampled_from([0, 2, 3]))

    def seg(a: datetime, b: datetime, revision: int) -> Segment:
        return segment(
            plan,
            a,
            b,
            revision=revision,
            version=revision,
            addons=addons,
            kind=kind,
            discount=discount,
        )

    one = price(make_input(start, end, [seg(start, end, 1)], used, digits))
    two = price(make_input(start, end, [seg(start, cut, 1), seg(cut, end, 2)], used, digits))
    assert [(x.code, x.amount) for x in two.lines] == [(x.code, x.amount) for x in one.lines]
    assert two.subtotal == one.subtotal
    assert all(line.source["revisions"] == [1, 2] for line in two.lines)


@PROPERTY
@given(st.data())
def test_splitting_a_month_between_two_plans_with_equal_prices_moves_a_line_by_under_a_minor_unit(
    data: st.DataObject,
) -> None:
    # metered and metered_twin price alike but are two plans, so the revisions are priced
    # apart; every line of theirs is additive over time (average seats, no included units)
    start, end = data.draw(periods())
    addons = data.draw(st.lists(st.sampled_from(ADDONS), unique=True))
    kind, discount = data.draw(st.sampled_from(KINDS))
    cut = data.draw(instants(start, end).filter(lambda t: start < t < end))
    used = data.draw(usage_in(start, end))
    digits = data.draw(st.sampled_from([0, 2, 3]))

    def seg(plan: str, a: datetime, b: datetime, revision: int) -> Segment:
        return segment(plan, a, b, revision=revision, addons=addons, kind=kind, discount=discount)

    one = price(make_input(start, end, [seg("metered", start, end, 1)], used, digits))
    two = price(
        make_input(
            start,
            end,
            [seg("metered", start, cut, 1), seg("metered_twin", cut, end, 2)],
            used,
            digits,
        )
    )
    unit = minor(digits)
    assert len(two.lines) >= len(one.lines)
    assert abs(two.subtotal - one.subtotal) <= len(two.lines) * unit
    counts = count_by_code(two)
    split, whole = total_by_code(two), total_by_code(one)
    for code, amount in whole.items():
        if code.startswith(("credit:", "discount:")):
            continue  # a percent of rounded lines: bounded by the subtotal's check above
        assert abs(split.get(code, Decimal(0)) - amount) <= counts.get(code, 1) * unit, code


# -- zero prices -----------------------------------------------------------------------------


def zero_priced(plan: Plan, zero: set[str]) -> Plan:
    """`plan` with the prices named in `zero` set to zero."""
    nothing = Decimal("0.00")
    prices = plan.price
    meters = {
        name: MeterPrice(
            meter=name,
            included=meter.included,
            tiers=tuple(Tier(tier.up_to, Decimal(0)) for tier in meter.tiers),
        )
        if f"meter:{name}" in zero
        else meter
        for name, meter in prices.meters.items()
    }
    assert prices.seat is not None
    return dataclasses.replace(
        plan,
        price=dataclasses.replace(
            prices,
            base=nothing if "base" in zero else prices.base,
            seat=dataclasses.replace(prices.seat, unit=nothing) if "seats" in zero else prices.seat,
            burst_seat_day=nothing if "burst" in zero else prices.burst_seat_day,
            instance_hour=Decimal(0) if "instances" in zero else prices.instance_hour,
            meters=meters,
        ),
    )


PRICED = ["base", "seats", "burst", "instances", "meter:api_calls", "meter:exports"]


@PROPERTY
@given(st.data())
def test_a_price_of_zero_always_gives_a_zero_line(data: st.DataObject) -> None:
    start, end = data.draw(periods())
    zero = set(data.draw(st.lists(st.sampled_from(PRICED + ADDONS), unique=True)))
    addons = data.draw(st.lists(st.sampled_from(ADDONS), unique=True))
    kind, discount = data.draw(st.sampled_from(KINDS))
    first = data.draw(instants(start, end).filter(lambda t: t < end))
    used = data.draw(usage_in(start, end))
    digits = data.draw(st.sampled_from([0, 2, 3]))

    base = segment("pro", first, end, addons=addons, kind=kind, discount=discount)
    seg = dataclasses.replace(
        base,
        plan=zero_priced(base.plan, zero),
        addons=tuple(
            dataclasses.replace(a, price=Decimal("0.00")) if a.name in zero else a
            for a in base.addons
        ),
    )
    priced = price(make_input(start, end, [seg], used, digits))
    codes = [line.code for line in priced.lines]
    for line in priced.lines:
        name = line.code.removeprefix("addon:")
        if line.code in zero or name in zero:
            assert line.unit_price == 0, line
            assert line.amount == 0, line
    # fees over active days have a nonzero quantity, so their zero-priced line is there
    assert "base" in codes
    assert [c for c in codes if c.startswith("addon:")] == [f"addon:{a}" for a in sorted(addons)]
    if zero >= set(PRICED) | set(addons):
        assert all(line.amount == 0 for line in priced.lines)
        assert priced.subtotal == 0


# -- every input -----------------------------------------------------------------------------


@st.composite
def inputs(draw: st.DrawFn) -> PricingInput:
    start, end = draw(periods())
    spill = timedelta(days=2)
    points = sorted(set(draw(st.lists(instants(start, end, spill), min_size=2, max_size=5))))
    segments = []
    for revision, (a, b) in enumerate(zip(points, points[1:], strict=False), start=1):
        if draw(st.integers(0, 4)) == 0:
            continue  # a gap: no contract in force
        plan = draw(st.sampled_from(sorted(catalog().plans)))
        kind, discount = draw(st.sampled_from(KINDS))
        limit = draw(st.sampled_from([-1, None, 0, 2, 5]))
        addons = draw(st.lists(st.sampled_from(ADDONS), unique=True))
        segments.append(
            segment(
                plan,
                a,
                b,
                revision=revision,
                version=draw(st.integers(1, 3)),
                addons=addons,
                kind=kind,
                discount=discount,
                seat_limit=limit,
            )
        )
    currency, digits = draw(st.sampled_from(CURRENCIES))
    return make_input(start, end, segments, draw(usage_in(start, end)), digits, currency)


@PROPERTY
@given(inputs())
def test_the_subtotal_is_the_sum_of_lines_quantized_to_the_minor_unit(data: PricingInput) -> None:
    priced = price(data)
    assert priced.subtotal == sum((line.amount for line in priced.lines), Decimal(0))
    exponent = -data.minor_digits
    assert priced.subtotal.as_tuple().exponent == exponent
    for line in priced.lines:
        assert line.amount.as_tuple().exponent == exponent, line
        assert not (line.quantity == 0 and line.unit_price == 0), line
        assert line.amount == 0 or line.amount.is_signed() == (line.unit_price < 0), line


@PROPERTY
@given(inputs(), st.randoms(use_true_random=False))
def test_the_same_input_prices_to_the_same_lines(data: PricingInput, random: Random) -> None:
    first = price(data)
    assert repr(price(data)) == repr(first)  # values and exponents, byte for byte
    shuffled = dataclasses.replace(
        data,
        seats=tuple(random.sample(data.seats, len(data.seats))),
        instances=tuple(random.sample(data.instances, len(data.instances))),
    )
    assert repr(price(shuffled)) == repr(first)


@PROPERTY
@given(inputs())
def test_lines_come_group_by_group_in_order_and_a_trial_nets_to_zero(data: PricingInput) -> None:
    priced = price(data)
    groups: list[list[tuple[str, Decimal]]] = []
    previous_start: str | None = None
    for line in priced.lines:
        if line.source["start"] != previous_start:
            groups.append([])
            previous_start = line.source["start"]
        groups[-1].append((line.code, line.amount))
    starts = [line.source["start"] for line in priced.lines]
    assert starts == sorted(starts)
    for group in groups:
        ranks = [rank(code) for code, _ in group]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks), group
        if group[-1][0] == "credit:trial":
            assert sum(Fraction(amount) for _, amount in group) == 0, group
    # every group has a base line (its quantity, the fraction, is never zero)
    assert [group[0][0] for group in groups] == ["base"] * len(groups)
    versions = {v for line in priced.lines for v in line.source["policy_versions"]}
    assert tuple(sorted(versions)) == priced.policy_versions
