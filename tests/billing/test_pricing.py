"""billing/pricing.py, line by line, with every amount worked by hand in the test.

May 2026 has 31 days (2,678,400 s). In tests/billing's policy, team's base is 310.00
(10.00 a day), a seat over the five included 31.00 a month, a seat-day over the limit 2.00,
a weighted instance-hour 0.05, and api_calls are free to 1,000, then 0.01 to 5,000, then
0.005; the audit_pack add-on is 62.00 (2.00 a day).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import orjson
import pytest

from allotment.billing.priced import Interval, Priced
from allotment.billing.pricing import money, price
from allotment.policy.catalog import MeterPrice, Tier
from tests.billing import (
    DAY,
    HOUR,
    JPY_POLICY,
    JUNE,
    MAY,
    POLICY,
    by_code,
    catalog,
    codes,
    held,
    may,
    pricing,
    segment,
)

D = Decimal


def amounts(priced: Priced) -> list[tuple[str, Decimal]]:
    return [(line.code, line.amount) for line in priced.lines]


# -- a whole month -----------------------------------------------------------------------------


def test_a_whole_month_prices_every_line_in_order() -> None:
    priced = price(
        pricing(
            segment("team", addons=["audit_pack"]),
            # 10 seats all month, an 11th on May 10 from 06:00 to 09:00
            seats=[*held(10), Interval(may(10, 6), may(10, 9))],
            instances=[
                Interval(MAY, may(2), weight=1, kind="vm"),  # 24 h × 1
                Interval(may(5), may(5, 5), weight=4, kind="cluster"),  # 5 h × 4
            ],
            events=[(may(10), "api_calls", 9000)],
        )
    )
    assert codes(priced) == [
        "base",
        "seats",
        "burst",
        "instances",
        "meter:api_calls",
        "addon:audit_pack",
    ]
    lines = by_code(priced)
    assert (lines["base"].quantity, lines["base"].unit, lines["base"].amount) == (
        D("1"),
        "month",
        D("310.00"),
    )
    # peak 11 − 5 included = 6 seats × 31.00 × 31/31 = 186.00
    assert (lines["seats"].quantity, lines["seats"].amount) == (D("6"), D("186.00"))
    # 3 h over the limit of 10 = 0.125 seat-day × 2.00 = 0.25
    assert (lines["burst"].quantity, lines["burst"].amount) == (D("0.125"), D("0.25"))
    # 24 × 1 + 5 × 4 = 44 weighted hours × 0.05 = 2.20
    assert (lines["instances"].quantity, lines["instances"].amount) == (D("44"), D("2.20"))
    # 9,000 calls: 4,000 × 0.01 + 4,000 × 0.005 = 60.00
    assert (lines["meter:api_calls"].quantity, lines["meter:api_calls"].amount) == (
        D("8000"),
        D("60.00"),
    )
    assert lines["addon:audit_pack"].amount == D("62.00")
    # 310.00 + 186.00 + 0.25 + 2.20 + 60.00 + 62.00
    assert priced.subtotal == D("620.45")
    assert priced.policy_versions == (1,)


def test_every_line_names_its_source_in_json_types() -> None:
    priced = price(
        pricing(
            segment("team", revision=3, version=7, addons=["audit_pack"]),
            seats=held(6),
            instances=[Interval(may(5), may(5, 5), weight=4, kind="cluster")],
            events=[(may(10), "api_calls", 9000), (may(11), "api_calls", 0)],
        )
    )
    for line in priced.lines:
        orjson.dumps(line.source)  # no Decimal, no datetime: it serializes as is
        assert line.source["revisions"] == [3]
        assert line.source["policy_versions"] == [7]
        assert line.source["start"] == "2026-05-01T00:00:00.000000Z"
        assert line.source["end"] == "2026-06-01T00:00:00.000000Z"
    lines = by_code(priced)
    assert lines["seats"].source["intervals"] == 6
    assert lines["seats"].source["held"] == "6"
    assert lines["instances"].source["kinds"] == [
        {"kind": "cluster", "weight": 4, "intervals": 1, "hours": "5"}
    ]
    assert lines["meter:api_calls"].source["events"] == 2
    assert lines["meter:api_calls"].source["total"] == "9000"
    assert priced.policy_versions == (7,)


# -- proration -------------------------------------------------------------------------------


def test_a_contract_starting_mid_month_pays_for_its_days() -> None:
    # from May 16 12:00: 15.5 of 31 days = half the month
    priced = price(pricing(segment("team", may(16, 12), JUNE, addons=["audit_pack"])))
    lines = by_code(priced)
    assert lines["base"].quantity == D("0.5")
    assert lines["base"].amount == D("155.00")  # 310.00 × 15.5/31
    assert lines["base"].source["active_days"] == "15.5"
    assert lines["addon:audit_pack"].amount == D("31.00")  # 62.00 × 15.5/31


def test_the_current_month_bills_fees_to_the_fee_end_and_use_to_date() -> None:
    # Previewed on May 11: the segment ends now (10 days in), its fees run to June 1.
    # base 310.00 for the whole month; 2 leases of 1 h × 0.05 = 0.10 (counted to date only).
    to_date = dataclasses.replace(
        segment("team", MAY, may(11), addons=["audit_pack"]), fee_end=JUNE
    )
    leases = (Interval(may(2), may(2, 1)), Interval(may(3), may(3, 1)))
    lines = by_code(price(dataclasses.replace(pricing(to_date), instances=leases)))
    assert lines["base"].amount == D("310.00")
    assert lines["addon:audit_pack"].amount == D("62.00")
    assert lines["instances"].amount == D("0.10")


def test_proration_rounds_the_exact_fraction_once() -> None:
    # basic from May 21: 11 of 31 days; 100.00 × 11/31 = 35.4838709… → 35.48
    priced = price(pricing(segment("basic", may(21), JUNE)))
    (line,) = priced.lines
    assert line.quantity == D("0.354839")  # 11/31 = 0.35483870… shown to 6 places
    assert line.amount == D("35.48")
    assert priced.subtotal == D("35.48")


def test_a_contract_ending_mid_month_counts_seats_and_leases_to_its_end() -> None:
    # May 1 to May 11 12:00: 10.5 of 31 days
    priced = price(
        pricing(
            segment("team", MAY, may(11, 12)),
            seats=held(7, MAY, None),  # open seats: counted to the segment's end
            instances=[Interval(may(11), None, kind="vm")],  # open: 12 h to May 11 12:00
        )
    )
    lines = by_code(priced)
    assert lines["base"].amount == D("105.00")  # 310.00 × 10.5/31
    assert lines["seats"].amount == D("21.00")  # (7 − 5) × 31.00 × 10.5/31
    assert lines["instances"].quantity == D("12")
    assert lines["instances"].amount == D("0.60")  # 12 × 1 × 0.05


def test_segments_are_clipped_to_the_period() -> None:
    inside = price(pricing(segment("team", MAY, JUNE)))
    spilling = price(
        pricing(
            segment("team", datetime(2026, 4, 20, tzinfo=UTC), datetime(2026, 6, 9, tzinfo=UTC))
        )
    )
    assert amounts(spilling) == amounts(inside)
    assert by_code(spilling)["base"].amount == D("310.00")


def test_no_segment_prices_nothing() -> None:
    priced = price(pricing(seats=held(3)))
    assert priced == Priced(lines=(), subtotal=D("0.00"), policy_versions=())


# -- seats -----------------------------------------------------------------------------------

# 6 seats all month; 4 more from May 1 to May 16 12:00 (15.5 days); 2 more from May 20, open.
BASIS_SEATS = [*held(6), *held(4, MAY, may(16, 12)), *held(2, may(20), None)]


def test_seat_basis_peak_is_the_most_held_at_once() -> None:
    lines = by_code(price(pricing(segment("team"), seats=BASIS_SEATS)))
    # peak 6 + 4 = 10 (the later 2 come after the 4 left); (10 − 5) × 31.00 = 155.00
    assert (lines["seats"].quantity, lines["seats"].amount) == (D("5"), D("155.00"))
    assert lines["seats"].source["basis"] == "peak"


def test_seat_basis_average_is_time_weighted_and_keeps_its_fraction() -> None:
    lines = by_code(price(pricing(segment("team_average"), seats=BASIS_SEATS)))
    # seat-days: 6 × 31 + 4 × 15.5 + 2 × 12 = 272; average 272/31 = 8.7741935…
    # quantity 272/31 − 5 = 3.7741935… (shown 3.774194); × 31.00 = 272 − 155 = 117.00
    assert lines["seats"].quantity == D("3.774194")
    assert lines["seats"].amount == D("117.00")
    assert lines["seats"].source["held"] == "8.774194"


def test_seat_basis_end_counts_seats_held_just_before_the_end() -> None:
    lines = by_code(price(pricing(segment("team_end"), seats=BASIS_SEATS)))
    # at June 1 (just before): 6 + 2 = 8; (8 − 5) × 31.00 = 93.00
    assert (lines["seats"].quantity, lines["seats"].amount) == (D("3"), D("93.00"))


def test_seat_basis_end_of_a_segment_ending_mid_month() -> None:
    # ends May 18: just before it 6 seats (the 4 left May 16 12:00, the 2 come May 20)
    lines = by_code(price(pricing(segment("team_end", MAY, may(18)), seats=BASIS_SEATS)))
    # (6 − 5) × 31.00 × 17/31 = 17.00
    assert (lines["seats"].quantity, lines["seats"].amount) == (D("1"), D("17.00"))


def test_seats_are_half_open_so_a_handover_never_counts_twice() -> None:
    # 5 seats, then one released at May 10 00:00 the instant another is assigned
    seats = [*held(5), Interval(MAY, may(10)), Interval(may(10), JUNE)]
    lines = by_code(price(pricing(segment("team"), seats=seats)))
    assert lines["seats"].source["held"] == "6"  # not 7
    assert lines["seats"].amount == D("31.00")  # (6 − 5) × 31.00


def test_seats_under_the_included_give_a_zero_line() -> None:
    lines = by_code(price(pricing(segment("team"), seats=held(3))))
    assert (lines["seats"].quantity, lines["seats"].amount) == (D("0"), D("0.00"))
    assert lines["seats"].unit_price == D("31.00")


def test_a_seat_held_for_part_of_a_day_bills_fractional_seat_days() -> None:
    seats = [
        *held(10),  # the limit
        Interval(may(10, 6), may(10, 12)),  # 11th: 6 h
        Interval(may(10, 9), may(11, 3)),  # 12th: 18 h, overlapping the 11th 09:00–12:00
    ]
    lines = by_code(price(pricing(segment("team"), seats=seats)))
    # over the limit: 06–09 one seat (3 h), 09–12 two (6 seat-h), 12–03 one (15 h)
    # = 24 seat-hours = 1 seat-day × 2.00 = 2.00
    assert (lines["burst"].quantity, lines["burst"].unit) == (D("1"), "seat-day")
    assert lines["burst"].amount == D("2.00")
    # and the peak of 12 bills (12 − 5) × 31.00 = 217.00
    assert lines["seats"].amount == D("217.00")


def test_one_hour_over_the_limit_is_a_24th_of_a_seat_day() -> None:
    seats = [*held(10), Interval(may(3, 10), may(3, 11))]
    lines = by_code(price(pricing(segment("team"), seats=seats)))
    # 1/24 seat-day = 0.0416666… (shown 0.041667) × 2.00 = 0.08333… → 0.08
    assert lines["burst"].quantity == D("0.041667")
    assert lines["burst"].amount == D("0.08")


def test_burst_follows_the_seat_limit_of_the_segment() -> None:
    seats = [*held(12, may(16, 12), JUNE)]
    # the limit raised to 12: nothing over it, and 2.00 × 0 = 0.00
    lines = by_code(price(pricing(segment("team", seat_limit=12), seats=seats)))
    assert (lines["burst"].quantity, lines["burst"].amount) == (D("0"), D("0.00"))
    # with the plan's 10: 2 seats × 15.5 days = 31 seat-days × 2.00 = 62.00
    lines = by_code(price(pricing(segment("team"), seats=seats)))
    assert (lines["burst"].quantity, lines["burst"].amount) == (D("31"), D("62.00"))


def test_no_burst_line_without_a_limit_or_for_concurrent_seats() -> None:
    no_limit = price(pricing(segment("team", seat_limit=None), seats=held(12)))
    assert "burst" not in codes(no_limit)
    # flex: concurrent, limit 5, 7 sessions all month: no seat-days; the average 7 × 10.00
    flex = by_code(price(pricing(segment("flex"), seats=held(7))))
    assert "burst" not in flex
    assert (flex["seats"].quantity, flex["seats"].amount) == (D("7"), D("70.00"))
    assert flex["seats"].source["model"] == "concurrent"


# -- instances -------------------------------------------------------------------------------


def test_a_lease_crossing_the_month_boundaries_is_clipped_to_the_period() -> None:
    april_30 = datetime(2026, 4, 30, tzinfo=UTC)
    instances = [
        Interval(april_30 + 22 * HOUR, JUNE + 2 * HOUR, weight=4, kind="cluster"),
        Interval(april_30 + 23 * HOUR, may(1, 1, 30), weight=1, kind="vm"),
        Interval(april_30, april_30 + HOUR, weight=1, kind="vm"),  # all in April
    ]
    line = by_code(price(pricing(segment("team"), instances=instances)))["instances"]
    # cluster: 31 × 24 = 744 h × 4 = 2,976; vm: 00:00–01:30 = 1.5 h × 1
    # 2,977.5 × 0.05 = 148.875 → half-even → 148.88
    assert line.quantity == D("2977.5")
    assert line.amount == D("148.88")
    assert line.source["intervals"] == 2
    assert line.source["kinds"] == [
        {"kind": "cluster", "weight": 4, "intervals": 1, "hours": "744"},
        {"kind": "vm", "weight": 1, "intervals": 1, "hours": "1.5"},
    ]


# -- meters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "quantity", "unit_price", "amount"),
    [
        (0, "0", "0.01", "0.00"),  # nothing used: the rate the next unit would pay
        (800, "0", "0.01", "0.00"),  # under the 1,000 included
        (3000, "2000", "0.01", "20.00"),  # 2,000 × 0.01
        (5000, "4000", "0.01", "40.00"),  # 4,000 × 0.01, exactly the first tier
        (9000, "8000", "0.0075", "60.00"),  # 4,000 × 0.01 + 4,000 × 0.005; 60/8,000
        (10000, "9000", "0.0072222222", "65.00"),  # 40.00 + 5,000 × 0.005; 65/9,000
    ],
)
def test_meters_are_priced_in_graduated_tiers(
    total: int, quantity: str, unit_price: str, amount: str
) -> None:
    priced = price(pricing(segment("team"), events=[(may(10), "api_calls", total)]))
    line = by_code(priced)["meter:api_calls"]
    assert (line.quantity, line.unit_price, line.amount) == (D(quantity), D(unit_price), D(amount))
    assert line.unit == "api_calls"


def test_the_design_example_traces_each_tier() -> None:
    events = [(may(3), "api_calls", 4000), (may(20), "api_calls", 5000)]
    line = by_code(price(pricing(segment("team"), events=events)))["meter:api_calls"]
    assert line.source["meter"] == "api_calls"
    assert line.source["events"] == 2
    assert line.source["total"] == "9000"
    assert line.source["included"] == 1000
    assert line.source["tiers"] == [
        {"up_to": 5000, "unit": "0.01", "quantity": "4000"},
        {"up_to": None, "unit": "0.005", "quantity": "4000"},
    ]


def test_a_tier_below_the_included_prices_nothing() -> None:
    team = catalog().plans["team"]
    generous = MeterPrice(
        meter="api_calls",
        included=6000,
        tiers=(Tier(5000, D("0.01")), Tier(None, D("0.005"))),
    )
    plan = dataclasses.replace(
        team, price=dataclasses.replace(team.price, meters={"api_calls": generous})
    )
    base = segment("team")
    seg = dataclasses.replace(base, plan=plan)
    line = by_code(price(pricing(seg, events=[(may(2), "api_calls", 9000)])))["meter:api_calls"]
    # 6,000 free; the first tier ends at 5,000, below them: 3,000 × 0.005 = 15.00
    assert (line.quantity, line.unit_price, line.amount) == (D("3000"), D("0.005"), D("15.00"))
    idle = by_code(price(pricing(seg)))["meter:api_calls"]
    assert idle.unit_price == D("0.005")  # the tier the next unit falls in


def test_the_last_tier_is_unbounded_whatever_its_up_to() -> None:
    team = catalog().plans["team"]
    capped = MeterPrice(meter="api_calls", included=0, tiers=(Tier(100, D("0.10")),))
    plan = dataclasses.replace(
        team, price=dataclasses.replace(team.price, meters={"api_calls": capped})
    )
    seg = dataclasses.replace(segment("team"), plan=plan)
    line = by_code(price(pricing(seg, events=[(may(2), "api_calls", 150)])))["meter:api_calls"]
    assert line.amount == D("15.00")  # 150 × 0.10


def test_meter_lines_are_in_name_order_and_count_only_the_segment() -> None:
    events = [
        (may(30, 23), "api_calls", 70000),  # before the segment
        (may(31, 1), "exports", 4),
        (may(31, 2), "api_calls", 8000),
    ]
    priced = price(pricing(segment("pro", may(31), JUNE), events=events))
    assert [c for c in codes(priced) if c.startswith("meter:")] == [
        "meter:api_calls",
        "meter:exports",
    ]
    lines = by_code(priced)
    # pro: 5,000 included, then 0.002: 3,000 × 0.002 = 6.00
    assert lines["meter:api_calls"].amount == D("6.00")
    assert lines["meter:exports"].amount == D("0.40")  # 4 × 0.10


# -- add-ons ---------------------------------------------------------------------------------


def test_addons_are_prorated_and_in_name_order() -> None:
    priced = price(pricing(segment("basic", may(22), JUNE, addons=["support", "audit_pack"])))
    assert codes(priced) == ["base", "addon:audit_pack", "addon:support"]
    lines = by_code(priced)
    # 10 of 31 days: 62.00 × 10/31 = 20.00; 15.50 × 10/31 = 5.00; 100.00 × 10/31 = 32.2580… → 32.26
    assert lines["addon:audit_pack"].amount == D("20.00")
    assert lines["addon:support"].amount == D("5.00")
    assert lines["base"].amount == D("32.26")
    assert priced.subtotal == D("57.26")


# -- amendments ------------------------------------------------------------------------------


def test_an_amendment_on_the_last_day_prices_each_revision_with_its_plan() -> None:
    priced = price(
        pricing(
            segment("team", MAY, may(31), revision=1, version=1),  # 30 days
            segment("pro", may(31), JUNE, revision=2, version=2),  # 1 day
            seats=held(7),
            events=[
                (may(10), "api_calls", 9000),
                (may(31, 12), "api_calls", 3000),
                (may(31, 13), "exports", 4),
            ],
        )
    )
    assert amounts(priced) == [
        ("base", D("300.00")),  # 310.00 × 30/31
        ("seats", D("60.00")),  # (7 − 5) × 31.00 × 30/31
        ("burst", D("0.00")),  # 7 seats, limit 10
        ("instances", D("0.00")),
        ("meter:api_calls", D("60.00")),  # 9,000 in team's tiers
        ("base", D("20.00")),  # 620.00 × 1/31
        ("seats", D("0.00")),  # 7 seats, 10 included
        ("burst", D("0.00")),
        ("instances", D("0.00")),
        ("meter:api_calls", D("0.00")),  # 3,000 under pro's 5,000 included
        ("meter:exports", D("0.40")),  # 4 × 0.10
    ]
    # 300.00 + 60.00 + 60.00 + 20.00 + 0.40
    assert priced.subtotal == D("440.40")
    assert priced.policy_versions == (1, 2)
    first, second = priced.lines[0], priced.lines[5]
    assert (first.source["revisions"], first.source["plan"]) == ([1], "team")
    assert (second.source["revisions"], second.source["plan"]) == ([2], "pro")
    assert second.source["start"] == "2026-05-31T00:00:00.000000Z"


def test_an_amendment_that_changes_nothing_priced_changes_nothing_on_the_invoice() -> None:
    seats = [*held(7), Interval(may(19, 20), may(20, 4))]  # one seat across the cut
    events = [(may(19), "api_calls", 3000), (may(21), "api_calls", 3000)]
    one = price(pricing(segment("team", addons=["audit_pack"]), seats=seats, events=events))
    # revision 2 from May 20 (say, an override) under policy version 2, whose team plan
    # gained a feature and a description but kept its prices
    v2 = POLICY.replace(
        "  team:\n    features: [editor, agent, api]",
        "  team:\n    description: now with exports\n    features: [editor, agent, api, exports]",
    )
    assert catalog(v2).plans["team"] != catalog().plans["team"]
    two = price(
        pricing(
            segment("team", MAY, may(20), revision=1, version=1, addons=["audit_pack"]),
            segment("team", may(20), JUNE, revision=2, version=2, addons=["audit_pack"], policy=v2),
            seats=seats,
            events=events,
        )
    )
    assert amounts(two) == amounts(one)
    assert two.subtotal == one.subtotal
    assert all(line.source["revisions"] == [1, 2] for line in two.lines)
    assert all(line.source["policy_versions"] == [1, 2] for line in two.lines)
    assert two.policy_versions == (1, 2)


def test_an_amendment_of_the_seat_limit_splits_the_lines() -> None:
    priced = price(
        pricing(
            segment("team", MAY, may(16, 12), revision=1),
            segment("team", may(16, 12), JUNE, revision=2, seat_limit=12),
        )
    )
    bases = [line for line in priced.lines if line.code == "base"]
    assert [line.amount for line in bases] == [D("155.00"), D("155.00")]  # 310.00 × 15.5/31
    assert [line.source["revisions"] for line in bases] == [[1], [2]]


def test_segments_must_not_overlap() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        price(pricing(segment("team", MAY, may(20)), segment("pro", may(19), JUNE, revision=2)))
    with pytest.raises(ValueError, match="period"):
        price(pricing(segment("team"), start=JUNE, end=MAY))


# -- kinds -----------------------------------------------------------------------------------


def test_a_trial_is_credited_in_full_and_nets_to_zero() -> None:
    priced = price(
        pricing(
            segment("team", kind="trial", addons=["audit_pack"]),
            seats=held(7),
            events=[(may(10), "api_calls", 9000)],
        )
    )
    credit = priced.lines[-1]
    # 310.00 + 62.00 (seats) + 60.00 (api_calls) + 62.00 (audit_pack) = 494.00
    assert credit.code == "credit:trial"
    assert (credit.quantity, credit.unit, credit.unit_price) == (D("494.00"), "USD", D("-1"))
    assert credit.amount == D("-494.00")
    assert credit.source["lines"] == ["base", "seats", "meter:api_calls", "addon:audit_pack"]
    assert priced.subtotal == D("0.00")


def test_an_educational_discount_takes_its_percent_of_the_positive_lines() -> None:
    priced = price(pricing(segment("team", kind="educational", discount="40"), seats=held(7)))
    discount = priced.lines[-1]
    # (310.00 + 62.00) × 40% = 148.80
    assert discount.code == "discount:educational"
    assert (discount.quantity, discount.unit_price) == (D("372.00"), D("-0.4"))
    assert discount.amount == D("-148.80")
    assert discount.source["discount_percent"] == "40"
    assert priced.subtotal == D("223.20")  # 372.00 − 148.80


def test_a_pilot_discount_is_rounded_half_even() -> None:
    priced = price(pricing(segment("team", kind="pilot", discount="33.33")))
    # 310.00 × 33.33% = 103.323 → 103.32
    assert priced.lines[-1].code == "discount:pilot"
    assert priced.lines[-1].amount == D("-103.32")
    assert priced.subtotal == D("206.68")


def test_a_discount_applies_per_revision() -> None:
    priced = price(
        pricing(
            segment("team", MAY, may(16, 12), kind="standard"),
            segment("team", may(16, 12), JUNE, revision=2, kind="pilot", discount="50.00"),
        )
    )
    # standard half: 155.00; pilot half: 155.00 − 77.50
    assert [line.amount for line in priced.lines if line.code in ("base", "discount:pilot")] == [
        D("155.00"),
        D("155.00"),
        D("-77.50"),
    ]
    assert priced.subtotal == D("232.50")


# -- zero prices and rounding ----------------------------------------------------------------


def test_a_price_of_zero_gives_a_zero_line_and_no_usage_no_line() -> None:
    priced = price(
        pricing(
            segment("free", addons=["gratis"]),
            seats=held(2),
            events=[(may(4), "api_calls", 100)],
        )
    )
    # base 0 × 1 month, seats 2 × 0.00, api_calls 100 × 0, add-on 0.00 × 1 month: kept;
    # burst (0 seat-days at 0.00) and instances (0 hours at 0): left out
    assert amounts(priced) == [
        ("base", D("0.00")),
        ("seats", D("0.00")),
        ("meter:api_calls", D("0.00")),
        ("addon:gratis", D("0.00")),
    ]
    assert priced.subtotal == D("0.00")


@pytest.mark.parametrize(
    ("minutes", "amount"),
    [
        (150, "0.12"),  # 2.5 h × 0.05 = 0.125 → 0.12 (half to even)
        (162, "0.14"),  # 2.7 h × 0.05 = 0.135 → 0.14 (half to even)
        (165, "0.14"),  # 2.75 h × 0.05 = 0.1375 → 0.14
    ],
)
def test_line_amounts_round_half_even(minutes: int, amount: str) -> None:
    lease = Interval(may(2), may(2) + minutes * (HOUR / 60), kind="vm")
    line = by_code(price(pricing(segment("team"), instances=[lease])))["instances"]
    assert line.amount == D(amount)


@pytest.mark.parametrize(
    ("exact", "digits", "rounded"),
    [
        (Fraction(1, 8), 2, "0.12"),
        (Fraction(135, 1000), 2, "0.14"),
        (Fraction(-1, 8), 2, "-0.12"),
        (Fraction(5, 2), 0, "2"),
        (Fraction(7, 2), 0, "4"),
        (Fraction(1, 3), 3, "0.333"),
        (Fraction(0), 2, "0.00"),
    ],
)
def test_money_rounds_half_even_to_the_minor_unit(
    exact: Fraction, digits: int, rounded: str
) -> None:
    value = money(exact, digits)
    assert str(value) == rounded  # the value and its exponent
    assert value.as_tuple().exponent == -digits


def test_yen_have_no_minor_unit() -> None:
    assert catalog(JPY_POLICY).minor_digits == 0
    priced = price(
        pricing(
            segment("team", may(16), JUNE, policy=JPY_POLICY),
            instances=[
                Interval(may(20), may(20, 5), kind="vm"),  # 5 h × 0.5 = 2.5 → 2
                Interval(may(21), may(21, 7), kind="vm"),  # 7 h × 0.5 = 3.5 → 4 … together 6
            ],
            currency="JPY",
            digits=0,
        )
    )
    lines = by_code(priced)
    assert str(lines["base"].amount) == "16000"  # 31,000 × 16/31
    # one line: 12 h × 0.5 = 6
    assert str(lines["instances"].amount) == "6"
    assert str(priced.subtotal) == "16006"


def test_yen_lines_round_half_even_to_whole_yen() -> None:
    odd = price(
        pricing(
            segment("team", policy=JPY_POLICY),
            instances=[Interval(may(20), may(20, 5))],
            currency="JPY",
            digits=0,
        )
    )
    even = price(
        pricing(
            segment("team", policy=JPY_POLICY),
            instances=[Interval(may(20), may(20, 7))],
            currency="JPY",
            digits=0,
        )
    )
    assert str(by_code(odd)["instances"].amount) == "2"  # 2.5 → 2
    assert str(by_code(even)["instances"].amount) == "4"  # 3.5 → 4
    assert str(by_code(odd)["base"].amount) == "31000"


def test_a_microsecond_of_a_segment_is_priced_exactly() -> None:
    # 1 µs of 2,678,400 s at 310.00 is 1.157…e-10: a 0.00 line, never a negative zero
    priced = price(pricing(segment("team", MAY, MAY + DAY / 86_400_000_000)))
    assert str(by_code(priced)["base"].amount) == "0.00"
