"""When an alert is due, pure: thresholds crossed, periods and windows. No I/O, no clock.

crossed(before=, after=, limit=, percents=)   the percentages of `limit` that `after`
                                              reaches and `before` did not
period_start(period, now, year_start=)        where a limit's period holding `now` starts
window_start(now, window)                     the start of the fixed window holding `now`
                                              (a surge fires once per window)
number(value)                                 a quantity as a payload writes it
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def crossed(
    *, before: Decimal, after: Decimal, limit: int, percents: Iterable[int]
) -> tuple[int, ...]:
    """Each percentage p whose mark (p % of `limit`) lies in (before, after]: the use moved
    from under it to at or over it. A limit of 0 has no marks to cross."""
    if limit <= 0:
        return ()
    return tuple(p for p in percents if before * 100 < p * limit <= after * 100)


def period_start(period: str, now: datetime, *, year_start: datetime | None) -> datetime:
    """The start of the limit's period holding `now` (UTC calendar; a year is the contract
    year, `year_start`, as the meter gate counts it)."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    if period == "hour":
        return hour
    day = hour.replace(hour=0)
    if period == "day":
        return day
    if period == "year" and year_start is not None:
        return year_start
    return day.replace(day=1)


def window_start(now: datetime, window: timedelta) -> datetime:
    step = window.total_seconds()
    elapsed = (now - EPOCH).total_seconds()
    return EPOCH + timedelta(seconds=elapsed - elapsed % step)


def number(value: Decimal | int) -> int | str:
    """An integral quantity as an integer; any other as a decimal string (payloads are JSON,
    and a float would not be exact)."""
    if isinstance(value, int):
        return value
    if value == value.to_integral_value():
        return int(value)
    return format(value.normalize(), "f")
