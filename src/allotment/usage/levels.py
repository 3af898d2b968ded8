"""Levels, pure and exact: a gauge's time-weighted average, and a percentile of hourly values.

Most meters add up (a count, a sum) or keep the greatest reading; a level is instead a
rate held over the period, which is what storage (GB-month) and host billing (the p95 of
hourly host counts) price. docs/usage.md ("Levels") works both by hand.

Time-weighted average (`aggregation: average`). Each reading of the gauge holds from its
`time` until the next reading of the same series (a tenant's readings are one series; the
customer's level is the sum of its series). Before a series' first reading it holds 0: there
was nothing to measure. The last reading before a range is carried into it, across hour,
day and month boundaries, however old. So

    average(a, b) = (1 / (b − a)) · Σ over series ∫ from a to b of level(t) dt

exactly (a `Fraction`; instants to the microsecond), and averaging [a, m) and [m, b)
weighted by their lengths gives average(a, b) for any m.

Percentile (`percentile: p` on a count, sum or max meter). Each UTC clock hour that the
range overlaps has a value: the meter's own total for the part of the hour inside the range
(a count, a sum, the greatest reading), 0 when nothing was counted in it. With those N values
sorted ascending, the percentile is the one at nearest rank ⌈p/100 · N⌉ (1-based; at least
1): with 720 hours, p95 is the 684th, so the top 36 hours do not count; p100 is the greatest
hour; p50 of 4 hours is the 2nd.

    clock_hours(a, b)              N, the UTC hours [a, b) overlaps
    nearest_rank(p, n)             ⌈p/100 · n⌉, at least 1 (0 when n is 0)
    percentile(values, n, p)       values (the hours with something) filled with 0 to n
    Series.add / Series.integral   one series' readings, and ∫ level dt over [a, b)
    average(series, a, b)          the time-weighted mean of all series over [a, b)
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

HOUR = timedelta(hours=1)
_ZERO = Fraction(0)


def _seconds(span: timedelta) -> Fraction:
    return Fraction(span.days * 86_400 + span.seconds) + Fraction(span.microseconds, 1_000_000)


def _hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def clock_hours(start: datetime, end: datetime) -> int:
    """How many UTC clock hours [start, end) overlaps (0 when empty)."""
    if end <= start:
        return 0
    first = _hour_of(start)
    last = _hour_of(end - timedelta(microseconds=1))
    return int((last - first) / HOUR) + 1


def nearest_rank(p: Decimal, n: int) -> int:
    """The 1-based nearest rank of percentile `p` (0 < p ≤ 100) among `n` values."""
    if n <= 0:
        return 0
    return max(1, math.ceil(Fraction(p) * n / 100))


def percentile(values: Sequence[Decimal], hours: int, p: Decimal) -> Decimal:
    """The nearest-rank `p` percentile of `values` filled with zeros to `hours` values (the
    hours nothing was counted in). `values` holds at most `hours` items."""
    n = max(hours, len(values))
    rank = nearest_rank(p, n)
    if rank == 0:
        return Decimal(0)
    # The zeros are counted, never listed: a range of years has hundreds of thousands.
    below = sorted(v for v in values if v < 0)
    above = sorted(v for v in values if v > 0)
    zeros = n - len(below) - len(above)
    if rank <= len(below):
        return below[rank - 1]
    if rank <= len(below) + zeros:
        return Decimal(0)
    return above[rank - len(below) - zeros - 1]


@dataclass
class Series:
    """One gauge series: readings in time order (the last of equal times wins)."""

    times: list[datetime] = field(default_factory=list)
    values: list[Fraction] = field(default_factory=list)

    def add(self, time: datetime, value: Decimal | Fraction) -> None:
        """Append a reading no earlier than the last one."""
        if self.times and time < self.times[-1]:
            raise ValueError("readings are added in time order")
        self.times.append(time)
        self.values.append(Fraction(value))

    def level_at(self, moment: datetime) -> Fraction:
        """The reading in force at `moment` (0 before the first)."""
        index = bisect_right(self.times, moment) - 1
        return self.values[index] if index >= 0 else _ZERO

    def integral(self, start: datetime, end: datetime) -> Fraction:
        """∫ level dt over [start, end), in value × seconds."""
        if end <= start:
            return _ZERO
        total = _ZERO
        level = self.level_at(start)
        cursor = start
        lo = bisect_right(self.times, start)
        hi = bisect_left(self.times, end)
        for index in range(lo, hi):
            moment = self.times[index]
            total += level * _seconds(moment - cursor)
            level, cursor = self.values[index], moment
            # equal times: the next iteration adds 0 seconds at this level, then takes the next
        total += level * _seconds(end - cursor)
        return total

    def readings(self, start: datetime, end: datetime) -> int:
        """How many readings lie in [start, end)."""
        return bisect_left(self.times, end) - bisect_left(self.times, start)


def average(series: Iterable[Series], start: datetime, end: datetime) -> Fraction:
    """The time-weighted mean over [start, end) of the sum of `series` (0 when empty)."""
    if end <= start:
        return _ZERO
    total = sum((one.integral(start, end) for one in series), _ZERO)
    return total / _seconds(end - start)
