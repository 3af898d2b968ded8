"""Priced add-ons, add-on quantities and allowances, and the negotiated discount, in the pure
pricing core (billing/addons.py, billing/pricing.py), every amount worked by hand.

May 2026: 31 days. The plan is tests/billing's team (base 310.00, a seat over five 31.00,
api_calls free to 1,000 then 0.01); the add-ons below are priced so a day comes out even.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.billing.priced import Interval, Line, Priced, Segment
from allotment.billing.pricing import money, price
from allotment.policy.catalog import Addon, AddonPrice
from tests.billing import JUNE, MAY, by_code, catalog, codes, held, may, pricing, segment

D = Decimal

ADDON_POLICY = """
currency: USD
features:
  editor: {seat: required}
  agent: {instance: required}
  api: {meter: api_calls}
  gpu: {meter: gpu_minutes}
meters:
  api_calls: {event_type: api.call, aggregation: sum, property: count}
  gpu_minutes: {event_type: gpu.used, aggregation: sum, property: minutes}
plans:
  team:
    features: [editor, agent, api]
    seats: {limit: 10, model: named}
    instances: {limit: 8, kinds: {vm: 1, cluster: 4}}
    limits: {api_calls: {limit: 100000}}
    price:
      base: "310.00"
      seat: {unit: "31.00", basis: peak, included: 5}
      meters:
        api_calls: {included: 1000, tiers: [{unit: "0.01"}]}
  team_average:
    extends: team
    price: {seat: {basis: average}}
addons:
  storage_pack: {price: "62.00"}
  support: {per_seat: {unit: "3.10"}}
  support_end: {per_seat: {unit: "3.10", basis: end}}
  host_apm: {per_instance: {unit: "31.00"}}
  gpu: {per_unit: {meter: gpu_minutes, unit: "0.02"}, raises: {included: {gpu_minutes: 100}}}
  maintenance: {percent: 20, of: [base, seats]}
  api_boost:
    price: "15.50"
    raises: {limits: {api_calls: 50000}, included: {api_calls: 10000}, seats: 5, instances: 10}
"""


def bought(
    plan: str = "team",
    *addons: str | tuple[str, int],
    start=MAY,  # type: ignore[no-untyped-def]
    end=JUNE,  # type: ignore[no-untyped-def]
    revision: int = 1,
    discount: str | None = None,
    reason: str | None = None,
) -> Segment:
    names = [a if isinstance(a, str) else a[0] for a in addons]
    quantities = tuple(sorted(a for a in addons if not isinstance(a, str)))
    return dataclasses.replace(
        segment(plan, start, end, revision=revision, addons=names, policy=ADDON_POLICY),
        addon_quantities=quantities,
        discount_percent=None if discount is None else D(discount),
        discount_reason=reason,
    )


def amounts(priced: Priced) -> dict[str, Decimal]:
    return {line.code: line.amount for line in by_code(priced).values()}


# -- a monthly fee, bought three times -------------------------------------------------------


def test_a_fee_bought_three_times_is_three_fees() -> None:
    line = by_code(price(pricing(bought("team", ("storage_pack", 3)))))["addon:storage_pack"]
    assert line.amount == D("186.00")  # 3 × 62.00
    assert line.quantity == D("3") and line.unit == "month" and line.unit_price == D("62.00")
    assert line.source["quantity"] == 3 and line.source["addon"] == "storage_pack"
    assert "× 3" in line.description


def test_a_fee_bought_three_times_from_mid_month_is_prorated() -> None:
    # May 16 12:00 to June: 15.5 of 31 days; 3 × 62.00 × ½ = 93.00
    half = bought("team", ("storage_pack", 3), start=may(16, 12))
    line = by_code(price(pricing(half)))["addon:storage_pack"]
    assert line.amount == D("93.00") and line.quantity == D("1.5")


def test_a_quantity_changed_mid_month_prices_each_part() -> None:
    first = bought("team", "storage_pack", end=may(16, 12))
    second = bought("team", ("storage_pack", 3), start=may(16, 12), revision=2)
    lines = [line for line in price(pricing(first, second)).lines if line.code.startswith("addon")]
    assert [line.amount for line in lines] == [D("31.00"), D("93.00")]  # 62 × ½, 3 × 62 × ½
    assert [line.source["quantity"] for line in lines] == [1, 3]


# -- per seat, per instance ------------------------------------------------------------------


def test_per_seat_takes_the_plans_seat_basis() -> None:
    # 7 seats all month, peak (team's basis): 7 × 3.10 = 21.70; twice bought: 43.40.
    once = by_code(price(pricing(bought("team", "support"), seats=held(7))))["addon:support"]
    assert once.amount == D("21.70") and once.quantity == D("7") and once.unit == "seat"
    assert once.source["basis"] == "peak" and once.source["held"] == "7"
    twice = by_code(price(pricing(bought("team", ("support", 2)), seats=held(7))))
    assert twice["addon:support"].amount == D("43.40") and twice["addon:support"].quantity == 14


def test_per_seat_on_an_average_basis_follows_the_plan() -> None:
    # 6 seats all month, 4 more for 15.5 days: average 8 → 8 × 3.10 = 24.80
    seats = [*held(6), *held(4, MAY, may(16, 12))]
    line = by_code(price(pricing(bought("team_average", "support"), seats=seats)))
    assert line["addon:support"].amount == D("24.80")
    assert line["addon:support"].source["basis"] == "average"


def test_per_seat_with_its_own_basis() -> None:
    # peak 10, but 6 held at the end: 6 × 3.10 = 18.60
    seats = [*held(6), *held(4, MAY, may(16, 12))]
    line = by_code(price(pricing(bought("team", "support_end"), seats=seats)))
    assert line["addon:support_end"].amount == D("18.60")


def test_per_seat_prorates_to_the_fee_end_like_the_seats_line() -> None:
    # From May 21 (11 days): 7 seats × 3.10 × 11/31 = 7.70
    line = by_code(price(pricing(bought("team", "support", start=may(21)), seats=held(7))))
    assert line["addon:support"].amount == D("7.70")


def test_per_instance_counts_instances_not_kind_weights() -> None:
    # 2 VMs all month and a cluster (weight 4) for a day: peak 3 instances × 31.00 = 93.00
    instances = [
        Interval(MAY, JUNE, weight=1, kind="vm"),
        Interval(MAY, JUNE, weight=1, kind="vm"),
        Interval(may(3), may(4), weight=4, kind="cluster"),
    ]
    line = by_code(price(pricing(bought("team", "host_apm"), instances=instances)))
    assert line["addon:host_apm"].amount == D("93.00")
    assert line["addon:host_apm"].unit == "instance" and line["addon:host_apm"].quantity == 3


def test_per_seat_with_no_seat_held_is_a_zero_line() -> None:
    line = by_code(price(pricing(bought("team", "support"))))["addon:support"]
    assert line.amount == D("0.00") and line.quantity == 0 and line.unit_price == D("3.10")


# -- per unit, and included units ------------------------------------------------------------


def test_per_unit_prices_the_meter_above_its_included_units() -> None:
    # 350 GPU minutes, 100 included by the add-on: 250 × 0.02 = 5.00
    events = [(may(3), "gpu_minutes", 200), (may(9), "gpu_minutes", 150)]
    line = by_code(price(pricing(bought("team", "gpu"), events=events)))["addon:gpu"]
    assert line.amount == D("5.00") and line.quantity == D("250") and line.unit == "gpu_minutes"
    assert line.source["total"] == "350" and line.source["included"] == 100
    assert line.source["events"] == 2


def test_quantities_show_at_most_6_decimals_and_amounts_come_from_the_exact_value() -> None:
    # 200.2500004 GPU minutes, 100 included: 100.2500004 × 0.02 = 2.005000008 → 2.01 (from
    # 100.25 as shown it would be 2.00); api_calls 1,500.0000001, 1,000 included.
    events = [(may(3), "gpu_minutes", D("200.2500004")), (may(4), "api_calls", D("1500.0000001"))]
    lines = by_code(price(pricing(bought("team", "gpu"), events=events)))  # type: ignore[arg-type]
    gpu, calls = lines["addon:gpu"], lines["meter:api_calls"]
    assert str(gpu.quantity) == "100.25" and gpu.amount == D("2.01")
    assert gpu.source["total"] == "200.25" and "200.25 used" in gpu.description
    assert str(calls.quantity) == "500" and calls.source["total"] == "1500"
    assert calls.amount == D("5.00")


def test_an_addon_raises_the_included_units_of_the_plans_meter_line() -> None:
    # api_boost × 2: included 1,000 + 2 × 10,000 = 21,000; 30,000 calls → 9,000 × 0.01
    events = [(may(5), "api_calls", 30_000)]
    lines = by_code(price(pricing(bought("team", ("api_boost", 2)), events=events)))
    meter = lines["meter:api_calls"]
    assert meter.amount == D("90.00") and meter.quantity == D("9000")
    assert meter.source["included"] == 21_000 and meter.source["included_by_addons"] == 20_000
    assert lines["addon:api_boost"].amount == D("31.00")  # 2 × 15.50
    without = by_code(price(pricing(bought("team"), events=events)))["meter:api_calls"]
    assert without.amount == D("290.00") and "included_by_addons" not in without.source


# -- a percentage of named lines -------------------------------------------------------------


def test_a_percentage_of_the_base_and_seats_lines() -> None:
    # 310.00 + (7 − 5) × 31.00 = 372.00; 20 % = 74.40
    lines = by_code(price(pricing(bought("team", "maintenance"), seats=held(7))))
    line = lines["addon:maintenance"]
    assert line.amount == D("74.40") and line.quantity == D("372.00")
    assert line.unit == "USD" and line.unit_price == D("0.2")
    assert line.source["lines"] == ["base", "seats"] and line.source["percent"] == "20"


def test_a_percentage_follows_prorated_lines_and_comes_after_other_addons() -> None:
    # May 21 to June (11 days): base 110.00, seats 2 × 31.00 × 11/31 = 22.00 → 20 % = 26.40
    priced = price(
        pricing(bought("team", "maintenance", "storage_pack", start=may(21)), seats=held(7))
    )
    assert codes(priced)[-2:] == ["addon:storage_pack", "addon:maintenance"]
    assert by_code(priced)["addon:maintenance"].amount == D("26.40")


def test_a_percentage_of_lines_the_group_lacks_is_of_nothing() -> None:
    # No seat over the included five: the seats line is 0.00; 20 % of 310.00 = 62.00
    line = by_code(price(pricing(bought("team", "maintenance"), seats=held(3))))
    assert line["addon:maintenance"].amount == D("62.00")


# -- the negotiated discount -----------------------------------------------------------------


def test_a_negotiated_discount_on_a_standard_contract() -> None:
    # 310.00 + 3 × 62.00 = 496.00; 10 % → −49.60
    terms = bought("team", ("storage_pack", 3), discount="10", reason="three-year renewal")
    lines = by_code(price(pricing(terms)))
    discount = lines["discount:negotiated"]
    assert discount.amount == D("-49.60") and discount.quantity == D("496.00")
    assert discount.source["reason"] == "three-year renewal"
    assert discount.source["discount_percent"] == "10"
    assert discount.source["lines"] == ["base", "addon:storage_pack"]
    assert "three-year renewal" in discount.description
    assert sum(lines[c].amount for c in lines) == D("446.40")


def test_a_discount_after_a_percentage_addon_discounts_it_too() -> None:
    # 310.00 + 62.00 maintenance = 372.00; 25 % → −93.00
    terms = bought("team", "maintenance", discount="25", reason="launch partner")
    lines = amounts(price(pricing(terms)))
    assert lines["addon:maintenance"] == D("62.00") and lines["discount:negotiated"] == D("-93.00")


def test_a_changed_discount_splits_the_month() -> None:
    first = bought("team", discount="10", reason="pilot", end=may(16, 12))
    second = bought("team", discount="20", reason="renewal", start=may(16, 12), revision=2)
    found = [line for line in price(pricing(first, second)).lines if line.code.startswith("disc")]
    assert [line.amount for line in found] == [D("-15.50"), D("-31.00")]
    assert [line.source["reason"] for line in found] == ["pilot", "renewal"]


# -- properties ------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CODES = ["base", "seats", "meter:api_calls", "addon:storage_pack", "addon:support"]


@st.composite
def months_of_use(draw: st.DrawFn) -> tuple[Segment, list[Interval], list[Interval], list]:
    day = draw(st.integers(1, 31))
    hour = draw(st.integers(0, 23))
    start = may(day, hour)
    seats = [
        Interval(may(draw(st.integers(1, 31)), draw(st.integers(0, 23))), None)
        for _ in range(draw(st.integers(0, 14)))
    ]
    instances = [
        Interval(may(draw(st.integers(1, 31))), None, weight=draw(st.sampled_from([1, 4])))
        for _ in range(draw(st.integers(0, 6)))
    ]
    events = [(may(draw(st.integers(1, 31))), "api_calls", draw(st.integers(0, 20_000)))]
    plan = draw(st.sampled_from(["team", "team_average"]))
    return bought(plan, "storage_pack", "support", start=start), seats, instances, events


@PROPERTY
@given(
    use=months_of_use(),
    percent=st.decimals(min_value=D("0.0001"), max_value=D(100), places=4),
    of=st.lists(st.sampled_from(CODES), min_size=1, max_size=5, unique=True),
)
def test_a_percentage_line_follows_its_base_lines_exactly(
    use: tuple[Segment, list[Interval], list[Interval], list],
    percent: Decimal,
    of: list[str],
) -> None:
    terms, seats, instances, events = use
    share = Addon("share", frozenset(), D(0), pricing=AddonPrice("percent", percent, of=tuple(of)))
    with_share = dataclasses.replace(terms, addons=(*terms.addons, share))
    priced = price(pricing(with_share, seats=seats, instances=instances, events=events))
    lines = by_code(priced)
    named = [line for line in priced.lines if line.code in of]
    base = sum((Fraction(line.amount) for line in named), Fraction(0))
    line = lines["addon:share"]
    assert line.amount == money(base * Fraction(percent) / 100, 2)
    assert line.quantity == money(base, 2)
    assert line.source["lines"] == [code for code in CODES if code in of and code in lines]
    # and the lines it is of are those priced without it
    alone = by_code(price(pricing(terms, seats=seats, instances=instances, events=events)))
    assert {c: lines[c].amount for c in alone} == {c: alone[c].amount for c in alone}


def _addon_lines(priced: Priced) -> dict[str, Line]:
    return {line.code: line for line in priced.lines if line.code.startswith("addon:")}


@PROPERTY
@given(
    use=months_of_use(),
    quantity=st.integers(1, 40),
    name=st.sampled_from(["storage_pack", "support", "host_apm", "api_boost"]),
)
def test_quantity_times_an_addon_is_its_lines_times_the_quantity(
    use: tuple[Segment, list[Interval], list[Interval], list], quantity: int, name: str
) -> None:
    terms, seats, instances, events = use
    base = dataclasses.replace(terms, addons=(catalog(ADDON_POLICY).addons[name],))
    times = dataclasses.replace(base, addon_quantities=((name, quantity),))
    one = price(pricing(base, seats=seats, instances=instances, events=events))
    many = price(pricing(times, seats=seats, instances=instances, events=events))
    code = f"addon:{name}"
    line_one, line_many = by_code(one)[code], by_code(many)[code]
    # The same add-on priced at quantity × its unit price, bought once: the same amount.
    addon = base.addons[0]
    scaled = dataclasses.replace(
        addon,
        price=addon.price * quantity,
        pricing=None
        if addon.pricing is None
        else dataclasses.replace(addon.pricing, unit=addon.pricing.unit * quantity),
    )
    rescaled = price(
        pricing(
            dataclasses.replace(base, addons=(scaled,)),
            seats=seats,
            instances=instances,
            events=events,
        )
    )
    assert line_many.amount == by_code(rescaled)[code].amount
    assert line_many.source["quantity"] == quantity
    if terms.start == MAY:  # a whole month: every amount exact, so it multiplies
        assert line_many.amount == line_one.amount * quantity
    # Allowances multiply too: api_boost's included units on the meter line.
    meter_one, meter_many = by_code(one)["meter:api_calls"], by_code(many)["meter:api_calls"]
    extra = 10_000 if name == "api_boost" else 0
    assert meter_many.source["included"] == meter_one.source["included"] + extra * (quantity - 1)
    # Nothing else moves.
    moved = (code, "meter:api_calls")
    others = {c: line.amount for c, line in by_code(one).items() if c not in moved}
    assert {c: by_code(many)[c].amount for c in others} == others


@pytest.mark.parametrize("quantity", [1, 3])
def test_allowances_raise_the_seat_limit_priced_for_burst(quantity: int) -> None:
    """The segment's seat limit comes raised from billing/data.py (contracts/limits.seat_limits),
    so the burst line counts seat-days over the raised limit, not the plan's."""
    from allotment.contracts.limits import seat_limits
    from allotment.contracts.terms import Terms

    compiled = catalog(ADDON_POLICY)
    terms = Terms(
        plan="team",
        kind="standard",
        starts_at=MAY,
        ends_at=None,
        addons=("api_boost",),
        addon_quantities=(("api_boost", quantity),) if quantity != 1 else (),
    )
    pool = seat_limits(terms, compiled.plans["team"], addons=compiled.addons)
    assert pool is not None and pool.limit == 10 + 5 * quantity


def test_per_unit_of_a_level_is_priced_per_month_like_the_plans_meter_lines() -> None:
    """An average meter (GB stored, say) priced by an add-on: max(0, level − included) × unit
    × the fee fraction. From May 16 12:00, 350 on average, 100 included: 250 × 0.02 × ½."""
    from allotment.billing.priced import MeterTotal

    def level(start, end, meter):  # type: ignore[no-untyped-def]
        return MeterTotal(meter, D("350"), 4, level=meter == "gpu_minutes")

    data = dataclasses.replace(pricing(bought("team", "gpu", start=may(16, 12))), meters=level)
    line = by_code(price(data))["addon:gpu"]
    assert line.amount == D("2.50") and line.quantity == D("250")
    assert line.source["level"] is True and line.source["fraction"] == "0.5"


@pytest.mark.parametrize(
    ("bought_seats", "held_seats", "billed"), [(25, 7, 25), (25, 30, 30), (None, 7, 7)]
)
def test_per_seat_on_a_contracted_basis_bills_the_seats_bought_or_the_peak_above(
    bought_seats: int | None, held_seats: int, billed: int
) -> None:
    """basis contracted: the seats bought, or the peak held when more (bought + overage);
    a contract that bought none is billed its peak."""
    addon = catalog(ADDON_POLICY).addons["support"]
    contracted = dataclasses.replace(
        addon,
        pricing=dataclasses.replace(addon.pricing, basis="contracted"),  # type: ignore[arg-type]
    )
    terms = dataclasses.replace(bought("team"), addons=(contracted,), contracted_seats=bought_seats)
    line = by_code(price(pricing(terms, seats=held(held_seats))))["addon:support"]
    assert line.quantity == billed and line.amount == D("3.10") * billed
    assert line.source["basis"] == "contracted"
