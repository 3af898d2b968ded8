"""Tier modes, flat fees, packages, seat tiers, instance prices by kind, the monthly minimum
and one-time fees, line by line, every amount worked by hand (docs/billing.md).

May 2026 has 31 days. TIERS's api_calls: 1,000 included, then up to 5,000 at 0.01 with a flat
5.00, up to 20,000 at 0.005 with a flat 10.00, then 0.002.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal

import pytest

from allotment.billing.commitments import plan_starts
from allotment.billing.priced import Interval, Priced, Segment
from allotment.billing.pricing import price
from allotment.kit.clock import isoformat
from tests.billing import JUNE, MAY, by_code, codes, held, may, pricing, segment

D = Decimal

TIERS = """
currency: USD
features:
  api: {meter: api_calls}
  agent: {instance: required}
  editor: {seat: required}
meters:
  api_calls: {event_type: api.call, aggregation: sum, property: count}
plans:
  graduated:
    features: [api, agent, editor]
    seats: {limit: 50, model: named}
    instances: {limit: 100, kinds: {vm: 1, cluster: 4}}
    price:
      meters:
        api_calls:
          included: 1000
          tiers:
            - {up_to: 5000, unit: "0.01", flat: "5.00"}
            - {up_to: 20000, unit: "0.005", flat: "10.00"}
            - {unit: "0.002"}
  volume:
    extends: graduated
    price: {meters: {api_calls: {mode: volume}}}
  packaged:
    extends: graduated
    price: {meters: {api_calls: {package: {size: 1000, price: "4.00"}}}}
  seats_tiered:
    extends: graduated
    price: {seat: {included: 2, tiers: [{up_to: 10, unit: "31.00"}, {unit: "15.50"}]}}
  seats_volume:
    extends: seats_tiered
    price: {seat: {mode: volume}}
  by_kind:
    extends: graduated
    price: {instance_hour: "0.05", instances: {kinds: {cluster: "0.50"}}}
  committed:
    extends: graduated
    price:
      base: "100.00"
      minimum: "500.00"
      one_time: {training: "250.00", setup: "1000.00"}
"""


def seg(plan: str, start: datetime = MAY, end: datetime = JUNE, **changes: object) -> Segment:
    built = segment(plan, start, end, policy=TIERS)
    return dataclasses.replace(built, **changes) if changes else built


def calls(plan: str, count: int, **changes: object) -> Priced:
    return price(pricing(seg(plan, **changes), events=[(may(10), "api_calls", count)]))


# -- graduated tiers with flat fees --------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "quantity", "unit_price", "amount", "charged"),
    [
        (800, "0", "0.01", "0.00", [False, False, False]),  # nothing billable, no flat
        (3000, "2000", "0.0125", "25.00", [True, False, False]),  # 2,000 × 0.01 + 5.00
        (5000, "4000", "0.01125", "45.00", [True, False, False]),  # 4,000 × 0.01 + 5.00
        (5001, "4001", "0.013747813", "55.00", [True, True, False]),  # 45 + 0.005 + 10
        (9000, "8000", "0.009375", "75.00", [True, True, False]),  # 40 + 5 + 20 + 10
        (30000, "29000", "0.0051724138", "150.00", [True, True, False]),  # 45 + 85 + 20
    ],
)
def test_graduated_tiers_charge_the_flat_fee_of_every_tier_reached(
    count: int, quantity: str, unit_price: str, amount: str, charged: list[bool]
) -> None:
    line = by_code(calls("graduated", count))["meter:api_calls"]
    assert (line.quantity, line.unit_price, line.amount) == (D(quantity), D(unit_price), D(amount))
    assert line.source["mode"] == "graduated"
    assert [tier.get("flat_charged") for tier in line.source["tiers"]] == [*charged[:2], None]


def test_graduated_source_traces_units_and_flat_fees_per_tier() -> None:
    line = by_code(calls("graduated", 9000))["meter:api_calls"]
    assert line.source["tiers"] == [
        {"up_to": 5000, "unit": "0.01", "quantity": "4000", "flat": "5.00", "flat_charged": True},
        {
            "up_to": 20000,
            "unit": "0.005",
            "quantity": "4000",
            "flat": "10.00",
            "flat_charged": True,
        },
        {"up_to": None, "unit": "0.002", "quantity": "0"},
    ]


# -- volume tiers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "quantity", "unit_price", "amount", "reached"),
    [
        (800, "0", "0.01", "0.00", None),
        (3000, "2000", "0.0125", "25.00", 0),  # 2,000 × 0.01 + 5.00
        (5000, "4000", "0.01125", "45.00", 0),  # the first tier holds 5,000
        (
            5001,
            "4001",
            "0.0074993752",
            "30.00",
            1,
        ),  # 4,001 × 0.005 + 10 = 30.005 → 30.00
        (9000, "8000", "0.00625", "50.00", 1),  # 8,000 × 0.005 + 10.00
        (30000, "29000", "0.002", "58.00", 2),  # 29,000 × 0.002, no flat on the last tier
    ],
)
def test_volume_prices_every_billable_unit_at_the_tier_the_total_reaches(
    count: int, quantity: str, unit_price: str, amount: str, reached: int | None
) -> None:
    line = by_code(calls("volume", count))["meter:api_calls"]
    assert (line.quantity, line.unit_price, line.amount) == (D(quantity), D(unit_price), D(amount))
    assert line.source["mode"] == "volume"
    assert line.source["reached"] == reached
    units = [tier["quantity"] for tier in line.source["tiers"]]
    assert units == [quantity if index == reached else "0" for index in range(3)]


def test_volume_source_marks_only_the_reached_tiers_flat_fee() -> None:
    line = by_code(calls("volume", 9000))["meter:api_calls"]
    assert [tier.get("flat_charged") for tier in line.source["tiers"]] == [False, True, None]


# -- packages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "packages", "amount"),
    [(1000, 0, "0.00"), (1001, 1, "4.00"), (9000, 8, "32.00"), (9001, 9, "36.00")],
)
def test_a_package_is_charged_per_started_block(count: int, packages: int, amount: str) -> None:
    line = by_code(calls("packaged", count))["meter:api_calls"]
    assert (line.quantity, line.unit_price, line.amount) == (D(packages), D("4.00"), D(amount))
    assert line.unit == "package of 1000 api_calls"
    assert line.source["mode"] == "package"
    assert line.source["package"] == {
        "size": 1000,
        "price": "4.00",
        "units": str(count - 1000 if count > 1000 else 0),
        "packages": packages,
    }
    assert line.source["total"] == str(count)
    assert "tiers" not in line.source


# -- seat tiers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "seats", "unit_price", "amount"),
    [
        ("seats_tiered", 14, "25.8333333333", "310.00"),  # 8 × 31.00 + 4 × 15.50
        ("seats_volume", 14, "15.50", "186.00"),  # 12 × 15.50
        ("seats_tiered", 6, "31.00", "124.00"),  # 4 × 31.00
        ("seats_volume", 6, "31.00", "124.00"),
        ("seats_volume", 2, "31.00", "0.00"),  # all included
    ],
)
def test_seat_tiers_price_the_seats_over_included(
    plan: str, seats: int, unit_price: str, amount: str
) -> None:
    line = by_code(price(pricing(seg(plan), seats=held(seats))))["seats"]
    assert (line.quantity, line.unit_price, line.amount) == (
        D(max(0, seats - 2)),
        D(unit_price),
        D(amount),
    )
    assert line.source["mode"] == ("volume" if plan == "seats_volume" else "graduated")
    assert line.source["basis"] == "peak"


def test_seat_tiers_are_prorated_by_the_fee_fraction() -> None:
    half = seg("seats_tiered", may(16, 12))  # 15.5 of 31 days
    line = by_code(price(pricing(half, seats=held(14))))["seats"]
    assert line.amount == D("155.00")  # 310.00 × ½
    assert line.source["tiers"][1] == {"up_to": None, "unit": "15.50", "quantity": "4"}


# -- instance prices by kind -------------------------------------------------------------------


def test_a_priced_kind_gets_its_own_line_unweighted() -> None:
    leases = [
        Interval(MAY, may(2), weight=1, kind="vm"),  # 24 h
        Interval(may(5), may(5, 10), weight=4, kind="cluster"),  # 10 h
        Interval(may(6), may(6, 2), weight=4, kind="cluster"),  # 2 h
    ]
    priced = price(pricing(seg("by_kind"), instances=leases))
    lines = by_code(priced)
    assert codes(priced) == ["base", "instances", "instances:cluster", "meter:api_calls"]
    # vm falls back to instance_hour × weight: 24 × 1 × 0.05
    assert (lines["instances"].quantity, lines["instances"].amount) == (D(24), D("1.20"))
    assert [k["kind"] for k in lines["instances"].source["kinds"]] == ["vm"]
    cluster = lines["instances:cluster"]
    # 12 h × 0.50, not 12 × 4 × 0.05 = 2.40
    assert (cluster.quantity, cluster.unit_price, cluster.amount) == (D(12), D("0.50"), D("6.00"))
    assert cluster.unit == "cluster instance-hour"
    assert cluster.source["kind"] == "cluster"
    assert cluster.source["intervals"] == 2
    assert cluster.source["hours"] == "12"


def test_a_priced_kind_with_no_lease_shows_a_zero_line() -> None:
    line = by_code(price(pricing(seg("by_kind"))))["instances:cluster"]
    assert (line.quantity, line.amount) == (D(0), D("0.00"))


# -- minimum -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "usage", "true_up"),
    [
        (0, "0.00", "400.00"),  # 500 − 100 base
        (9000, "75.00", "325.00"),  # 500 − (100 + 75)
        (250000, "590.00", "0.00"),  # 45 + 85 + 230,000 × 0.002 = 590; met
    ],
)
def test_the_minimum_tops_the_lines_up(count: int, usage: str, true_up: str) -> None:
    priced = calls("committed", count)
    lines = by_code(priced)
    assert lines["meter:api_calls"].amount == D(usage)
    minimum = lines["minimum"]
    assert (minimum.quantity, minimum.unit_price, minimum.amount) == (D(true_up), D(1), D(true_up))
    assert minimum.unit == "USD"
    assert minimum.source["minimum"] == "500.00"
    assert minimum.source["committed"] == str(D("100.00") + D(usage))
    assert minimum.source["lines"] == ["base", "meter:api_calls"]


def test_the_minimum_is_prorated_and_comes_before_the_one_time_fees() -> None:
    half = seg("committed", may(16, 12), plan_started=may(16, 12))
    priced = price(pricing(half, events=[(may(20), "api_calls", 9000)]))
    assert codes(priced) == [
        "base",
        "meter:api_calls",
        "minimum",
        "one_time:setup",
        "one_time:training",
    ]
    lines = by_code(priced)
    # 500 × ½ = 250 − (50 base + 75 usage) = 125
    assert lines["minimum"].amount == D("125.00")
    assert lines["minimum"].source["prorated"] == "250"
    assert priced.subtotal == D("50.00") + D("75.00") + D("125.00") + D("1250.00")


def test_a_discount_covers_the_true_up_and_the_one_time_fees() -> None:
    priced = calls("committed", 9000, kind="educational", discount_percent=D(40), plan_started=MAY)
    discount = by_code(priced)["discount:educational"]
    # (100 + 75 + 325 + 1000 + 250) × 0.40 = 700
    assert discount.amount == D("-700.00")
    assert discount.source["lines"] == [
        "base",
        "meter:api_calls",
        "minimum",
        "one_time:setup",
        "one_time:training",
    ]
    assert priced.subtotal == D("1050.00")


def test_a_trial_nets_to_zero_with_its_minimum() -> None:
    priced = calls("committed", 9000, kind="trial")
    assert "minimum" in codes(priced)
    assert not any(code.startswith("one_time:") for code in codes(priced))
    assert priced.subtotal == D("0.00")


# -- one-time fees -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("started", "charged"),
    [
        (MAY, True),
        (may(31, 23), True),
        (datetime(2026, 4, 20, tzinfo=MAY.tzinfo), False),
        (None, False),
        (JUNE, False),
    ],
)
def test_one_time_fees_are_charged_in_the_group_they_fall_due_in(
    started: datetime | None, charged: bool
) -> None:
    priced = calls("committed", 0, plan_started=started)
    fees = [line for line in priced.lines if line.code.startswith("one_time:")]
    if not charged:
        assert fees == []
        return
    assert [(f.code, f.quantity, f.unit, f.unit_price, f.amount) for f in fees] == [
        ("one_time:setup", D(1), "one-time", D("1000.00"), D("1000.00")),
        ("one_time:training", D(1), "one-time", D("250.00"), D("250.00")),
    ]
    assert fees[0].source["due"] == isoformat(started)


def test_a_plan_change_mid_month_charges_the_new_plans_fees_unprorated() -> None:
    before = seg("graduated", MAY, may(16), plan_started=datetime(2026, 3, 1, tzinfo=MAY.tzinfo))
    after = seg("committed", may(16), JUNE, revision=2, plan_started=may(16))
    priced = price(pricing(before, after))
    fees = [line for line in priced.lines if line.code.startswith("one_time:")]
    assert [(f.code, f.amount, f.source["revisions"]) for f in fees] == [
        ("one_time:setup", D("1000.00"), [2]),
        ("one_time:training", D("250.00"), [2]),
    ]


# -- when a plan's fees fall due ---------------------------------------------------------------


def test_plan_starts_on_the_contract_start_even_before_its_first_revision() -> None:
    assert plan_starts([(may(3), "team", "standard")], starts_at=MAY, ends_at=None) == {"team": MAY}


def test_plan_starts_a_trial_converted_in_place_at_the_conversion() -> None:
    revisions = [(MAY, "team", "trial"), (may(15), "team", "standard")]
    assert plan_starts(revisions, starts_at=MAY, ends_at=None) == {"team": may(15)}
    assert plan_starts(revisions[:1], starts_at=MAY, ends_at=None) == {}


def test_plan_starts_once_per_plan_and_ignores_plans_never_in_force() -> None:
    revisions = [
        (may(1), "starter", "standard"),  # replaced before the term starts
        (may(2), "team", "standard"),
        (may(10), "pro", "standard"),
        (may(20), "team", "standard"),  # back to team: not due again
        (JUNE, "enterprise", "standard"),  # after the term ends
    ]
    found = plan_starts(revisions, starts_at=may(5), ends_at=JUNE)
    assert found == {"team": may(5), "pro": may(10)}
