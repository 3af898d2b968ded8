"""Time, counts and numbers for pricing and reconciliation, pure and exact (`Fraction`).

seconds(span)                  a timedelta as exact seconds
clip(interval, start, end)     the part of an interval inside [start, end)
steps(intervals, start, end)   held weight over [start, end) as (microseconds, held) pieces
weighted(pieces, above=0)      Σ seconds × weight held (above a limit), exactly
money / decimal / text / days  rounding half-even, for amounts and shown quantities
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Context, Decimal
from fractions import Fraction
from typing import Protocol

from allotment.policy.money import format_amount

# The most decimals an invoice shows of a quantity (a line's quantity, its description, its
# source): rounded half-even, trailing zeros dropped. Amounts come from the exact value.
QUANTITY_PLACES = 6
SECONDS_PER_DAY = 86_400
SECONDS_PER_HOUR = 3_600
MICROSECONDS_PER_SECOND = 1_000_000
MICROSECONDS_PER_HOUR = SECONDS_PER_HOUR * MICROSECONDS_PER_SECOND
MICROSECOND = timedelta(microseconds=1)
ZERO = Fraction(0)


class Span(Protocol):
    """An interval [start, end) (end None: open) holding `weight` (billing/pricing.Interval)."""

    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime | None: ...
    @property
    def weight(self) -> int: ...


def seconds(span: timedelta) -> Fraction:
    return Fraction(span.days * SECONDS_PER_DAY + span.seconds) + Fraction(
        span.microseconds, 1_000_000
    )


def clip(interval: Span, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The part of [interval.start, interval.end) inside [start, end); None when empty. An
    open interval (end None) runs to `end`."""
    lo = max(interval.start, start)
    hi = end if interval.end is None else min(interval.end, end)
    return (lo, hi) if lo < hi else None


def steps(
    intervals: Iterable[Span], start: datetime, end: datetime
) -> tuple[list[tuple[int, int]], int]:
    """The weight held over [start, end) (a count, for intervals of weight 1), as consecutive
    (microseconds, held) pieces covering it, and how many intervals overlap it. An interval
    [s, e) is held at t when s ≤ t < e, so one ending where another starts never counts
    twice. Lengths are whole microseconds (what a timestamp holds): integers add exactly and
    far faster than fractions, which `weighted` makes of the sum once."""
    deltas: dict[datetime, int] = {}
    overlapping = 0
    for interval in intervals:
        clipped = clip(interval, start, end)
        if clipped is None:
            continue
        overlapping += 1
        deltas[clipped[0]] = deltas.get(clipped[0], 0) + interval.weight
        deltas[clipped[1]] = deltas.get(clipped[1], 0) - interval.weight
    points = sorted({start, end, *deltas})
    pieces: list[tuple[int, int]] = []
    held = 0
    for lo, hi in zip(points, points[1:], strict=False):
        held += deltas.get(lo, 0)
        pieces.append(((hi - lo) // MICROSECOND, held))
    return pieces, overlapping


def weighted(pieces: Iterable[tuple[int, int]], above: int = 0) -> Fraction:
    """Σ length × (held − above, never below 0) over `steps`' pieces, in exact seconds: the
    weight-seconds held (above a limit)."""
    total = sum(length * max(0, held - above) for length, held in pieces)
    return Fraction(total, MICROSECONDS_PER_SECOND)


# -- numbers ---------------------------------------------------------------------------------


def money(amount: Fraction, minor_digits: int) -> Decimal:
    """`amount` rounded half-even to `minor_digits` places, with exactly that exponent
    (0.125 → 0.12, 0.135 → 0.14, −0.125 → −0.12; JPY 12.5 → 12)."""
    units = round(amount * 10**minor_digits)
    return Decimal(f"{units}E-{minor_digits}")


def decimal(value: Fraction, places: int) -> Decimal:
    """`value` rounded half-even to `places`, trailing zeros dropped (never an exponent)."""
    units = round(value * 10**places)
    while places > 0 and units % 10 == 0:
        units //= 10
        places -= 1
    return Decimal(f"{units}E-{places}")


def text(value: Fraction, places: int = QUANTITY_PLACES) -> str:
    return format_amount(decimal(value, places))


def days(days: Fraction) -> str:
    return text(days, 2)


def min_places(value: Decimal, places: int) -> Decimal:
    """`value` with at least `places` decimals (22 → 22.00; 0.008 stays 0.008)."""
    shape = value.as_tuple()
    if shape.exponent >= -places:  # type: ignore[operator]
        # Exact whatever its size: the default context (28 digits) refuses a 40-digit price.
        wide = Context(prec=len(shape.digits) + places + abs(int(shape.exponent)) + 1)
        return value.quantize(Decimal(1).scaleb(-places), context=wide)
    return value


def hourly_percentile(
    intervals: Sequence[Span], start: datetime, end: datetime, percentile: int
) -> int:
    """The nearest-rank `percentile` of the hourly peaks of what `intervals` hold over
    [start, end): each UTC hour's (clipped to the span) highest count, as a `max` meter
    with a percentile takes its hours (docs/usage.md)."""
    peaks = []
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        following = hour + timedelta(hours=1)
        pieces, _ = steps(intervals, max(hour, start), min(following, end))
        peaks.append(max(held for _, held in pieces))
        hour = following
    if not peaks:
        return 0
    peaks.sort()
    rank = -(-percentile * len(peaks) // 100)  # ceil: nearest rank
    return peaks[max(rank, 1) - 1]
