"""billing/contracted.py through billing/pricing.py: seats and instance licences billed on
bought quantities, use above them as overage, and the per-instance licence fee, every amount
worked by hand (May 2026: 31 days, so 31.00 a month is 1.00 a day)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.billing.measure import decimal, money
from allotment.billing.priced import Interval, Priced
from allotment.billing.pricing import price
from tests.billing import JUNE, MAY, by_code, codes, held, may, pricing, segment

D = Decimal

POLICY = """
currency: USD
features:
  editor: {seat: required}
  agent: {instance: required}
plans:
  licensed:
    features: [editor, agent]
    seats: {limit: 40, model: named}
    instances: {limit: 20}
    price:
      base: "310.00"
      seat: {unit: "31.00", basis: contracted, overage_unit: "62.00"}
      instance_licence: {unit: "40.00", basis: contracted}
  licensed_average:
    extends: licensed
    price: {seat: {overage: average}}
  licensed_end:
    extends: licensed
    price: {seat: {overage: end}}
  floating:
    features: [editor]
    seats: {limit: 30, model: concurrent}
    price: {seat: {unit: "31.00", basis: contracted}}
  per_host:
    features: [agent]
    instances: {limit: 20}
    price: {instance_licence: {unit: "15.50"}}
  per_host_average:
    extends: per_host
    price: {instance_licence: {basis: average}}
"""


def bought(
    plan: str = "licensed",
    start: datetime = MAY,
    end: datetime = JUNE,
    *,
    seats: int | None = 25,
    instances: int | None = 10,
    **fields: object,
):  # type: ignore[no-untyped-def]
    return dataclasses.replace(
        segment(plan, start, end, policy=POLICY, **fields),  # type: ignore[arg-type]
        contracted_seats=seats,
        contracted_instances=instances,
    )


def amounts(priced: Priced) -> dict[str, Decimal]:
    return {line.code: line.amount for line in priced.lines}


def test_contracted_seats_and_licences_bill_what_was_bought_and_the_overage() -> None:
    priced = price(
        pricing(
            bought(),
            # 25 seats all month, 3 more for an hour on May 10: peak 28
            seats=[*held(25), *(Interval(may(10, 6), may(10, 7)) for _ in range(3))],
            # 12 instances live on May 2 (peak 12), 4 of them the rest of the month
            instances=[
                *(Interval(may(2), may(3), kind="vm") for _ in range(8)),
                *(Interval(may(2), JUNE, kind="vm") for _ in range(4)),
            ],
        )
    )
    assert codes(priced) == [
        "base",
        "seats",
        "seats_overage",
        "instances",
        "instance_licences",
        "instance_licences_overage",
    ]
    lines = by_code(priced)
    # 25 bought × 31.00 × 31/31 = 775.00, whatever is held
    assert (lines["seats"].quantity, lines["seats"].unit_price) == (D("25"), D("31.00"))
    assert lines["seats"].amount == D("775.00")
    # peak 28 − 25 = 3 × the overage price 62.00 = 186.00 (prorated like the seats)
    assert (lines["seats_overage"].quantity, lines["seats_overage"].amount) == (D("3"), D("186.00"))
    assert lines["seats_overage"].unit_price == D("62.00")
    assert lines["seats_overage"].source["basis"] == "peak"
    assert lines["seats_overage"].source["held"] == "28"
    assert lines["seats_overage"].source["contracted"] == 25
    # 10 licences × 40.00 = 400.00; peak 12 − 10 = 2 × 40.00 (no overage_unit) = 80.00
    assert lines["instance_licences"].amount == D("400.00")
    assert lines["instance_licences_overage"].quantity == D("2")
    assert lines["instance_licences_overage"].amount == D("80.00")
    assert lines["instance_licences"].source["basis"] == "contracted"
    assert lines["instance_licences"].source["contracted"] == 10
    assert lines["instances"].amount == D("0.00")  # no instance_hour: shown, not charged
    assert priced.subtotal == D("1751.00")  # 310 + 775 + 186 + 400 + 80


def test_use_under_the_bought_quantity_bills_the_quantity_and_no_overage() -> None:
    lines = by_code(price(pricing(bought(), seats=held(5))))
    assert lines["seats"].amount == D("775.00")
    assert (lines["seats_overage"].quantity, lines["seats_overage"].amount) == (D("0"), D("0.00"))
    assert lines["instance_licences_overage"].amount == D("0.00")


def test_bought_quantities_are_prorated_by_active_days_not_by_use() -> None:
    # active from May 11: 21 of 31 days; 25 × 31.00 × 21/31 = 525.00, 10 × 40.00 × 21/31
    lines = by_code(price(pricing(bought(start=may(11)))))
    assert lines["seats"].amount == D("525.00")
    assert lines["instance_licences"].amount == money(Fraction(400 * 21, 31), 2)
    assert lines["instance_licences"].amount == D("270.97")


def test_to_date_the_bought_quantity_is_the_whole_months() -> None:
    to_date = dataclasses.replace(bought(end=may(11)), fee_end=JUNE)
    lines = by_code(price(pricing(to_date, seats=held(30, end=may(11)))))
    assert lines["seats"].amount == D("775.00")
    assert lines["seats_overage"].amount == D("310.00")  # 5 × 62.00, for the month


def test_floating_seats_bill_the_bought_quantity_and_sessions_above_it() -> None:
    sessions = [*held(25), *(Interval(may(3, 9), may(3, 17)) for _ in range(4))]
    lines = by_code(price(pricing(bought("floating", instances=None), seats=sessions)))
    assert lines["seats"].amount == D("775.00")
    assert lines["seats"].source["model"] == "concurrent"
    assert (lines["seats_overage"].quantity, lines["seats_overage"].amount) == (D("4"), D("124.00"))


def test_overage_by_average_and_by_end() -> None:
    # 25 all month, 31 more for exactly one day: average 26, so 1 over; at the end 25
    seats = [*held(25), *(Interval(may(4), may(5)) for _ in range(31))]
    average = by_code(price(pricing(bought("licensed_average"), seats=seats)))
    assert average["seats_overage"].quantity == D("1")
    assert average["seats_overage"].amount == D("62.00")
    end = by_code(price(pricing(bought("licensed_end"), seats=[*seats, *held(2, may(30))])))
    assert end["seats_overage"].quantity == D("2")
    assert end["seats_overage"].source["basis"] == "end"


def test_a_contract_without_its_quantity_bills_every_seat_as_overage() -> None:
    lines = by_code(price(pricing(bought(seats=None, instances=None), seats=held(3))))
    assert (lines["seats"].quantity, lines["seats"].amount) == (D("0"), D("0.00"))
    assert lines["seats"].source["contracted"] is None
    assert lines["seats_overage"].amount == D("186.00")  # 3 × 62.00


def test_an_instance_licence_fee_on_the_peak_or_average_of_live_instances() -> None:
    instances = [
        Interval(MAY, JUNE, weight=4, kind="cluster"),  # one licence, whatever its weight
        Interval(MAY, JUNE, kind="vm"),
        Interval(may(7), may(7, 12), kind="vm"),
    ]
    peak = by_code(price(pricing(bought("per_host"), instances=instances)))
    assert "instance_licences_overage" not in peak
    # peak 3 × 15.50 = 46.50
    assert (peak["instance_licences"].quantity, peak["instance_licences"].amount) == (
        D("3"),
        D("46.50"),
    )
    # average 2 + 0.5/31 licences × 15.50 = 31.00 + 0.25 = 31.25
    average = by_code(price(pricing(bought("per_host_average"), instances=instances)))
    assert average["instance_licences"].amount == D("31.25")


def test_a_trial_credits_the_bought_quantities_too() -> None:
    priced = price(pricing(bought(kind="trial"), seats=held(27)))
    lines = by_code(priced)
    # 310 + 775 + 2 × 62 + 400 = 1609.00, credited in full
    assert lines["credit:trial"].amount == D("-1609.00")
    assert priced.subtotal == D("0.00")


def test_a_new_quantity_splits_the_month_at_its_revision() -> None:
    first = bought(end=may(16), seats=25)
    second = bought(start=may(16), seats=31, revision=2)
    priced = price(pricing(first, second, seats=held(28)))
    seat_lines = [line for line in priced.lines if line.code == "seats"]
    over = [line for line in priced.lines if line.code == "seats_overage"]
    # 25 × 31.00 × 15/31 = 375.00, then 31 × 31.00 × 16/31 = 496.00
    assert [line.amount for line in seat_lines] == [D("375.00"), D("496.00")]
    # 3 over for 15 days (3 × 62 × 15/31 = 90.00), none after
    assert [line.amount for line in over] == [D("90.00"), D("0.00")]


# -- properties ----------------------------------------------------------------------------

SECONDS_IN_MAY = 31 * 86_400
instants = st.integers(min_value=0, max_value=SECONDS_IN_MAY).map(
    lambda s: MAY + timedelta(seconds=s)
)


@st.composite
def spans(draw: st.DrawFn) -> tuple[datetime, datetime | None]:
    start = draw(instants)
    end = draw(st.one_of(st.none(), instants.filter(lambda moment: moment > start)))
    return start, end


@settings(max_examples=200, deadline=None, database=None)
@given(
    contracted=st.integers(min_value=0, max_value=60),
    seats=st.lists(spans(), max_size=30),
    window=st.tuples(instants, instants).filter(lambda w: w[0] < w[1]),
    plan=st.sampled_from(["licensed", "licensed_average", "licensed_end"]),
)
def test_the_seat_line_is_bought_quantity_times_unit_and_overage_is_what_exceeds_it(
    contracted: int,
    seats: list[tuple[datetime, datetime | None]],
    window: tuple[datetime, datetime],
    plan: str,
) -> None:
    start, end = window
    intervals = [Interval(s, e) for s, e in seats]
    lines = by_code(price(pricing(bought(plan, start, end, seats=contracted), seats=intervals)))
    fraction = Fraction(int((end - start).total_seconds()), SECONDS_IN_MAY)
    assert lines["seats"].amount == money(contracted * Fraction(31) * fraction, 2)

    # what was held, measured independently of billing/measure.py
    def covering(moment: datetime) -> int:
        return sum(1 for s, e in seats if s <= moment and (e is None or moment < e))

    changes = [s for s, _ in seats] + [e for _, e in seats if e is not None]
    if plan == "licensed":  # peak: the count just after the start or any change inside
        basis = Fraction(
            max(covering(p) for p in [start, *(c for c in changes if start < c < end)])
        )
    elif plan == "licensed_end":  # the count over the last instant before the end
        basis = Fraction(sum(1 for s, e in seats if s < end and (e is None or e >= end)))
    else:  # the time-weighted average
        held_seconds = sum(
            (
                (min(e or end, end) - max(s, start)).total_seconds()
                for s, e in seats
                if max(s, start) < min(e or end, end)
            ),
            0.0,
        )
        basis = Fraction(int(held_seconds), int((end - start).total_seconds()))
    over = max(Fraction(0), basis - contracted)
    assert lines["seats_overage"].quantity == decimal(over, 6)
    assert lines["seats_overage"].amount == money(over * 62 * fraction, 2)


@settings(max_examples=150, deadline=None, database=None)
@given(
    contracted=st.integers(min_value=0, max_value=20),
    leases=st.lists(st.tuples(spans(), st.sampled_from([1, 4])), max_size=25),
    window=st.tuples(instants, instants).filter(lambda w: w[0] < w[1]),
)
def test_the_licence_line_is_bought_licences_and_overage_the_peak_above_them(
    contracted: int,
    leases: list[tuple[tuple[datetime, datetime | None], int]],
    window: tuple[datetime, datetime],
) -> None:
    start, end = window
    instances = [Interval(s, e, weight=w, kind="vm") for (s, e), w in leases]
    lines = by_code(
        price(pricing(bought(start=start, end=end, instances=contracted), instances=instances))
    )
    fraction = Fraction(int((end - start).total_seconds()), SECONDS_IN_MAY)
    assert lines["instance_licences"].amount == money(contracted * Fraction(40) * fraction, 2)

    # each instance one licence, whatever its weight: the most live at once in the window
    def live(moment: datetime) -> int:
        return sum(1 for (s, e), _ in leases if s <= moment and (e is None or moment < e))

    moments = [start, *(s for (s, _), _ in leases if start < s < end)]
    over = max(0, max(live(m) for m in moments) - contracted)
    assert lines["instance_licences_overage"].quantity == over
    assert lines["instance_licences_overage"].amount == money(over * Fraction(40) * fraction, 2)
