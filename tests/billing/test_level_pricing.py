"""Meter lines of levels, pure (billing/levels.py, docs/billing.md "Levels"): an average or a
percentile priced per month like a fee, from its exact value; decimal `included`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.billing.measure import money
from allotment.billing.priced import MeterTotal, PricingInput, Segment
from allotment.billing.pricing import price
from allotment.policy import compile_policy, load

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)

POLICY = """
currency: USD
meters:
  storage_gb: {event_type: storage.gauge, aggregation: average, property: gb}
  hosts: {event_type: hosts.seen, aggregation: max, property: n, percentile: 95}
  transfer_kb: {event_type: transfer, aggregation: sum, property: bytes, multiplier: "0.001"}
plans:
  team:
    price:
      meters:
        storage_gb: {included: "0.5", tiers: [{up_to: 100, unit: "0.10"}, {unit: "0.05"}]}
        hosts: {tiers: [{unit: "15"}]}
        transfer_kb: {included: "0.5", tiers: [{unit: "0.02"}]}
  cheap:
    price:
      meters:
        storage_gb: {tiers: [{unit: "0.03"}]}
"""
_compiled = load(POLICY, "application/yaml")
assert _compiled.document is not None, _compiled.errors
CATALOG = compile_policy(_compiled.document)
LEVELS = {"storage_gb", "hosts"}


def segment(
    plan: str = "team", start: datetime = NOV, end: datetime = DEC, **more: object
) -> Segment:
    return Segment(
        start=start,
        end=end,
        revision=1,
        policy_version=1,
        plan=CATALOG.plans[plan],
        addons=(),
        kind="standard",
        discount_percent=None,
        seat_limit=None,
        seat_model=None,
        **more,  # type: ignore[arg-type]
    )


def meters(values: Mapping[str, Fraction]) -> Callable[[datetime, datetime, str], MeterTotal]:
    def total(start: datetime, end: datetime, meter: str) -> MeterTotal:
        value = values.get(meter, Fraction(0))
        shown = Decimal(round(value * 10**12)).scaleb(-12)
        return MeterTotal(meter, shown, 1, exact=value, level=meter in LEVELS)

    return total


def priced(values: Mapping[str, Fraction], *segments: Segment) -> dict[str, Any]:
    return {line.code: line for line in priced_lines(values, *segments)}


def priced_lines(values: Mapping[str, Fraction], *segments: Segment) -> list[Any]:
    data = PricingInput(
        period_start=NOV,
        period_end=DEC,
        currency="USD",
        minor_digits=2,
        segments=segments or (segment(),),
        seats=(),
        instances=(),
        meters=meters(values),
    )
    return list(price(data).lines)


def test_a_month_of_storage_and_hosts() -> None:
    lines = priced({"storage_gb": Fraction(20), "hosts": Fraction(3)})
    storage = lines["meter:storage_gb"]
    assert storage.quantity == Decimal("19.5") and storage.amount == Decimal("1.95")
    assert storage.unit_price == Decimal("0.10")
    assert storage.source["level"] is True and storage.source["fraction"] == "1"
    assert storage.source["included"] == "0.5"
    assert lines["meter:hosts"].amount == Decimal("45.00")


def test_the_exact_average_is_priced_not_its_rounded_display() -> None:
    # 1/6 GB at 0.03: exactly 0.005, half-even to 0.00; priced from the rounded
    # 0.166666666667 it would be 0.00500000000001 and round up to 0.01.
    lines = priced({"storage_gb": Fraction(1, 6)}, segment("cheap"))
    assert lines["meter:storage_gb"].amount == Decimal("0.00")


def test_an_average_is_shown_to_6_decimals_like_every_quantity() -> None:
    line = priced({"storage_gb": Fraction(1, 6)}, segment("cheap"))["meter:storage_gb"]
    assert line.quantity == Decimal("0.166667") and line.source["total"] == "0.166667"


def test_a_level_over_part_of_the_month_is_prorated_like_a_fee() -> None:
    # Team for the first ten days, cheap for the rest: each group's own average, priced for
    # its share of the month. Team: (20 − 0.5) × 0.10 × 10/30 = 0.65.
    lines = priced_lines(
        {"storage_gb": Fraction(20)},
        segment("team", NOV, NOV + 10 * DAY),
        segment("cheap", NOV + 10 * DAY, DEC),
    )
    first, second = (line for line in lines if line.code == "meter:storage_gb")
    assert first.amount == Decimal("0.65")
    assert first.source["fraction"] == "0.333333" and first.source["active_days"] == "10"
    # Cheap: 20 × 0.03 × 20/30 = 0.40.
    assert second.amount == Decimal("0.40")


def test_the_current_month_prices_the_level_so_far_for_the_whole_month() -> None:
    # Five days in, fees run to the month's end: the average so far stands for the month.
    lines = priced({"storage_gb": Fraction(20)}, segment(end=NOV + 5 * DAY, fee_end=DEC))
    assert lines["meter:storage_gb"].amount == Decimal("1.95")


def test_tiers_apply_to_the_level_and_the_rate_is_their_average() -> None:
    # 200.5 GB: 0.5 included, 99.5 at 0.10, 100.5 at 0.05 = 9.95 + 5.025 = 14.975, which
    # rounds half-even to 14.98; the rate shown is 14.975 / 200.
    line = priced({"storage_gb": Fraction(401, 2)})["meter:storage_gb"]
    assert line.amount == Decimal("14.98") and line.quantity == 200
    assert line.unit_price == Decimal("0.074875")


def test_a_sum_meter_with_a_decimal_included_is_not_a_level() -> None:
    line = priced({"transfer_kb": Fraction(5, 2)})["meter:transfer_kb"]
    # (2.5 − 0.5) × 0.02 = 0.04, not prorated: no `level` in its source.
    assert line.amount == Decimal("0.04") and "level" not in line.source
    assert line.source["included"] == "0.5"


@settings(max_examples=200, deadline=None)
@given(
    average=st.fractions(min_value=0, max_value=10**6, max_denominator=10**6),
    days=st.integers(min_value=1, max_value=30),
)
def test_a_level_line_is_its_tiered_amount_times_the_fee_fraction(
    average: Fraction, days: int
) -> None:
    line = priced({"hosts": average}, segment(end=NOV + days * DAY))["meter:hosts"]
    assert line.amount == money(average * 15 * Fraction(days, 30), 2)
