"""Levels, pure (usage/levels.py, docs/usage.md "Levels"): the time-weighted average of a
gauge over arbitrary instants, and the nearest-rank percentile of hourly values, by hand and
as Hypothesis properties; then through `Ledger.total`, as invoices and the usage API read
them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.policy.catalog import Meter
from allotment.usage.levels import (
    Series,
    average,
    clock_hours,
    nearest_rank,
    percentile,
)
from allotment.usage.totals import Ledger, Reading

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
PROPERTY = settings(max_examples=200, deadline=None)

# Instants anywhere in three months, to the microsecond: ranges cross hours, days, months.
SPAN_US = 92 * 86_400 * 1_000_000
instants = st.integers(min_value=0, max_value=SPAN_US).map(
    lambda us: NOV - timedelta(days=31) + timedelta(microseconds=us)
)
values = st.decimals(
    min_value=Decimal("-1000"), max_value=Decimal("1000000"), places=3, allow_nan=False
)


def series_of(readings: list[tuple[datetime, Decimal]]) -> Series:
    series = Series()
    for time, value in sorted(readings, key=lambda r: r[0]):
        series.add(time, value)
    return series


def seconds(span: timedelta) -> Fraction:
    return Fraction(span // timedelta(microseconds=1), 1_000_000)


def brute_integral(readings: list[tuple[datetime, Decimal]], a: datetime, b: datetime) -> Fraction:
    """∫ level dt over [a, b), independently: walk every microsecond boundary that matters."""
    ordered = sorted(readings, key=lambda r: r[0])
    points = sorted({a, b, *(t for t, _ in ordered if a < t < b)})
    total = Fraction(0)
    for lo, hi in zip(points, points[1:], strict=False):
        level = Fraction(0)
        for time, value in ordered:  # the last reading at or before lo (later ones win ties)
            if time <= lo:
                level = Fraction(value)
        total += level * seconds(hi - lo)
    return total


# -- average, by hand ---------------------------------------------------------------------


def test_a_month_of_storage_by_hand() -> None:
    # 10 GB from Nov 1, 40 GB from Nov 11, 10 GB from Nov 21: (10·10 + 40·10 + 10·10) / 30.
    series = series_of([(NOV, Decimal(10)), (NOV + 10 * DAY, Decimal(40)), (NOV + 20 * DAY, 10)])
    assert average([series], NOV, NOV + 30 * DAY) == 20
    # The first half of the month: (10·10 + 40·5) / 15 = 20; Nov 1 to 6: 10.
    assert average([series], NOV, NOV + 15 * DAY) == 20
    assert average([series], NOV, NOV + 5 * DAY) == 10


def test_before_the_first_reading_the_level_is_zero_and_the_last_is_carried() -> None:
    series = series_of([(NOV + 15 * DAY, Decimal(30))])
    # Nothing held for the first half of November: 30 for half the month averages 15.
    assert average([series], NOV, NOV + 30 * DAY) == 15
    # December has no reading: November's last one is carried across the month boundary.
    assert average([series], NOV + 30 * DAY, NOV + 61 * DAY) == 30
    assert average([series], NOV, NOV + 15 * DAY) == 0


def test_tenants_are_series_of_their_own_and_add_up() -> None:
    one = series_of([(NOV, Decimal(10))])
    two = series_of([(NOV, Decimal(5)), (NOV + 15 * DAY, Decimal(0))])
    # 10 all month, plus 5 for half of it: 12.5 on average.
    assert average([one, two], NOV, NOV + 30 * DAY) == Fraction(25, 2)


def test_equal_times_the_last_reading_wins() -> None:
    series = series_of([(NOV, Decimal(1)), (NOV, Decimal(7))])
    assert average([series], NOV, NOV + DAY) == 7


def test_an_average_is_exact_where_no_decimal_is() -> None:
    series = series_of([(NOV, Decimal(1)), (NOV + DAY, Decimal(2))])
    assert average([series], NOV, NOV + 3 * DAY) == Fraction(5, 3)  # (1 + 2 + 2) / 3


# -- average, properties ------------------------------------------------------------------


@PROPERTY
@given(
    constant=values,
    first=instants,
    times=st.lists(instants, max_size=8),
    bounds=st.tuples(instants, instants),
)
def test_a_constant_gauge_averages_to_that_constant(
    constant: Decimal, first: datetime, times: list[datetime], bounds: tuple[datetime, datetime]
) -> None:
    a, b = sorted(bounds)
    if a == b:
        b = a + timedelta(microseconds=1)
    start = min(first, a)  # a reading at or before the range: the level is known all along
    series = series_of([(start, constant), *((t, constant) for t in times)])
    assert average([series], a, b) == Fraction(constant)


@PROPERTY
@given(
    readings=st.lists(st.tuples(instants, values), max_size=12),
    cuts=st.tuples(instants, instants, instants),
)
def test_splitting_a_range_anywhere_and_weighting_by_duration_gives_the_same_average(
    readings: list[tuple[datetime, Decimal]], cuts: tuple[datetime, datetime, datetime]
) -> None:
    a, m, b = sorted(cuts)
    if a == b:
        return
    series = series_of(readings)
    whole = average([series], a, b) * seconds(b - a)
    parts = average([series], a, m) * seconds(m - a) + average([series], m, b) * seconds(b - m)
    assert whole == parts
    assert whole == brute_integral(readings, a, b)


@PROPERTY
@given(
    readings=st.lists(st.tuples(instants, values), min_size=1, max_size=12),
    bounds=st.tuples(instants, instants),
)
def test_an_average_lies_between_the_least_and_greatest_level_held(
    readings: list[tuple[datetime, Decimal]], bounds: tuple[datetime, datetime]
) -> None:
    a, b = sorted(bounds)
    if a == b:
        return
    series = series_of(readings)
    held = [series.level_at(a)] + [Fraction(v) for t, v in readings if a < t < b]
    assert min(held) <= average([series], a, b) <= max(held)


# -- percentile ---------------------------------------------------------------------------


def test_the_nearest_rank_rule() -> None:
    assert nearest_rank(Decimal(95), 720) == 684  # the top 36 hours of a 30-day month drop
    assert nearest_rank(Decimal(99), 744) == 737  # a 31-day month at p99: the top 7 drop
    assert nearest_rank(Decimal(50), 4) == 2
    assert nearest_rank(Decimal(100), 720) == 720
    assert nearest_rank(Decimal("0.1"), 3) == 1  # never below the first
    assert nearest_rank(Decimal(95), 0) == 0


def test_hours_without_data_count_as_zero() -> None:
    # 660 hours at 3 hosts, 30 at 10, 30 without data, in 720: sorted, ranks 31-690 hold 3.
    hours = [Decimal(3)] * 660 + [Decimal(10)] * 30
    assert percentile(hours, 720, Decimal(95)) == 3
    # A day with 20 hours at 1 and 4 without data: the 12th of 24 sorted is 1; with only 2
    # hours of data, the 12th is one of the 22 zeros.
    day = [Decimal(1)] * 20
    assert percentile(day, 24, Decimal(50)) == 1
    assert percentile([Decimal(5)] * 2, 24, Decimal(50)) == 0


def test_clock_hours_count_every_hour_a_range_touches() -> None:
    assert clock_hours(NOV, NOV + 30 * DAY) == 720
    assert clock_hours(NOV + timedelta(minutes=53), NOV + 2 * HOUR) == 2
    assert clock_hours(NOV + timedelta(minutes=53), NOV + timedelta(minutes=54)) == 1
    assert clock_hours(NOV, NOV) == 0


@PROPERTY
@given(
    hourly=st.lists(values, max_size=60),
    empty=st.integers(min_value=0, max_value=30),
    p=st.decimals(min_value=Decimal("0.0001"), max_value=100, places=4),
)
def test_the_percentile_is_the_value_at_the_nearest_rank(
    hourly: list[Decimal], empty: int, p: Decimal
) -> None:
    n = len(hourly) + empty
    if n == 0:
        assert percentile(hourly, n, p) == 0
        return
    found = percentile(hourly, n, p)
    rank = math.ceil(Fraction(p) * n / 100)
    everything = [*hourly, *[Decimal(0)] * empty]
    # At least `rank` values are at or below it, and fewer than `rank` strictly below it.
    assert sum(1 for v in everything if v <= found) >= rank
    assert sum(1 for v in everything if v < found) < rank
    assert found in everything


# -- through the ledger -------------------------------------------------------------------


def test_a_percentile_meter_ranks_the_hours_of_the_range() -> None:
    meter = Meter("hosts", "host.seen", "max", "n", percentile=Decimal(50))
    counters = {NOV + h * HOUR: (Decimal(h % 5), 1) for h in range(24)}
    ledger = Ledger(meter, counters=counters)
    # Hours 0..23 hold 0,1,2,3,4,0,1,...: sorted, the 12th of 24 is 2.
    assert ledger.total(NOV, NOV + DAY).quantity == 2
    # Over two days, the second without data: 24 zeros more, the 24th of 48 is 0.
    assert ledger.total(NOV, NOV + 2 * DAY).quantity == 0
    # A cut hour counts the part inside the range, from its events.
    ledger.exact[NOV] = [Reading(NOV + timedelta(minutes=10), "", Decimal(9))]
    assert ledger.total(NOV + timedelta(minutes=30), NOV + HOUR).quantity == 0
    assert ledger.total(NOV + timedelta(minutes=5), NOV + HOUR).quantity == 9


def test_a_level_is_not_measured_past_as_of() -> None:
    meter = Meter("storage", "storage.gauge", "average", "gb")
    ledger = Ledger(meter, series={"": series_of([(NOV, Decimal(8))])}, as_of=NOV + 5 * DAY)
    # Asked for the whole month on Nov 6: the average so far, not diluted by the future.
    total = ledger.total(NOV, NOV + 30 * DAY)
    assert total.quantity == 8 and total.exact == 8 and total.events == 1
    hosts = Meter("hosts", "host.seen", "count", None, percentile=Decimal(50))
    ranked = Ledger(hosts, counters={NOV: (Decimal(4), 4)}, as_of=NOV + HOUR)
    assert ranked.total(NOV, NOV + 30 * DAY).quantity == 4  # one hour so far, not 720


def test_an_average_shows_twelve_places_and_keeps_the_exact_value() -> None:
    meter = Meter("storage", "storage.gauge", "average", "gb")
    series = series_of([(NOV, Decimal(1)), (NOV + DAY, Decimal(2))])
    total = Ledger(meter, series={"": series}).total(NOV, NOV + 3 * DAY)
    assert total.exact == Fraction(5, 3)
    assert total.quantity == Decimal("1.666666666667")


def test_a_scaled_count_in_a_cut_hour_counts_its_scaled_readings() -> None:
    from allotment.usage.readings import reading

    meter = Meter("calls_k", "api.call", "count", None, multiplier=Decimal("0.001"))
    first = reading(meter, NOV + timedelta(minutes=10), "", {})
    second = reading(meter, NOV + timedelta(minutes=40), "", {})
    assert first is not None and second is not None
    ledger = Ledger(
        meter,
        counters={NOV: (Decimal("0.002"), 2)},
        exact={NOV: [first, second]},
    )
    assert ledger.total(NOV + timedelta(minutes=30), NOV + HOUR).quantity == Decimal("0.001")
    assert ledger.total(NOV, NOV + HOUR).quantity == Decimal("0.002")
