"""A per_instance add-on on a percentile basis (p95, p99): the nearest-rank percentile of the
hourly peaks of live instances, the host-billing convention (docs/billing.md, addon lines)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.billing.measure import hourly_percentile
from allotment.billing.priced import Interval
from allotment.billing.pricing import price
from tests.billing import by_code, pricing, segment

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
POLICY = """
currency: USD
features:
  hosts: {}
plans:
  pro:
    features: [hosts]
    instances: {limit: 100}
addons:
  apm: {per_instance: {unit: "31.00", basis: p95}}
"""
PRO = segment("pro", NOV, DEC, addons=("apm",), policy=POLICY)


def apm(extra_hours: int) -> tuple[Decimal, Decimal]:
    """Two hosts all month, a third for `extra_hours` from November 10."""
    hosts = [Interval(NOV, DEC), Interval(NOV, DEC)]
    hosts.append(Interval(NOV + 9 * 24 * HOUR, NOV + 9 * 24 * HOUR + extra_hours * HOUR))
    line = by_code(price(pricing(PRO, instances=hosts, start=NOV, end=DEC)))["addon:apm"]
    assert line.source["basis"] == "p95"
    return line.quantity, line.amount


def test_a_burst_within_the_top_5_percent_of_hours_is_free() -> None:
    assert apm(36) == (Decimal(2), Decimal("62.00"))  # 720 hours: p95 is the 684th


def test_a_burst_longer_than_that_is_billed() -> None:
    assert apm(37) == (Decimal(3), Decimal("93.00"))


@settings(max_examples=50, deadline=None)
@given(
    spans=st.lists(st.tuples(st.integers(0, 47), st.integers(1, 48)), max_size=6),
    percentile=st.sampled_from([95, 99]),
)
def test_the_percentile_lies_between_the_lowest_and_highest_hourly_peak(
    spans: list[tuple[int, int]], percentile: int
) -> None:
    end = NOV + 48 * HOUR
    held = [Interval(NOV + a * HOUR, min(end, NOV + (a + n) * HOUR)) for a, n in spans]
    value = hourly_percentile(held, NOV, end, percentile)
    peaks = [hourly_percentile(held, NOV + h * HOUR, NOV + (h + 1) * HOUR, 100) for h in range(48)]
    assert min(peaks) <= value <= max(peaks)
    assert sum(1 for p in peaks if p <= value) >= percentile * 48 / 100
