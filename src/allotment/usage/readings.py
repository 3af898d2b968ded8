"""What a meter reads from stored events, the same way at ingest and when totals are read back.

    reading(meter, time, tenant, data)  → Reading, or None (no property; the filter left it out)
    read_property(meter)                → the property `reading` needs, None for a count
    readings_of(meter, rows)            → the readings of the rows of the meter's event type
    shown(fraction)                     → a Decimal to 12 places, for an exact level shown

A meter's filter and multiplier (docs/usage.md) apply here, as `usage/meters.py` applies
them to the counters at ingest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from allotment.policy.catalog import Meter
from allotment.usage.meters import quantity, scaled, token


@dataclass(frozen=True, slots=True)
class Reading:
    """One event as a meter reads it: when, in which tenant, what it adds (a unique value's
    token for unique_count). Or, with `until`, the sum of the `events` a count or sum meter
    read in [time, until), a piece of an hour summed in the database (usage/segments.py)."""

    time: datetime
    tenant: str
    value: Any
    events: int = 1
    until: datetime | None = None


def reading(meter: Meter, time: datetime, tenant: str, data: Any) -> Reading | None:
    """What `meter` reads from one stored event (None: nothing it can read, or its filter
    leaves the event out), its multiplier applied."""
    time = time.astimezone(UTC)  # the hour an event falls in is UTC's, whatever the session's
    if not meter.counts(data):
        return None
    if meter.aggregation == "count" or meter.property is None:
        return Reading(time, tenant, scaled(meter, Decimal(1)))
    raw = data.get(meter.property) if isinstance(data, dict) else None
    if raw is None:
        return None
    if meter.aggregation == "unique_count":
        return Reading(time, tenant, token(raw))
    return Reading(time, tenant, scaled(meter, quantity(raw)))


def read_property(meter: Meter) -> str | None:
    """The property of `data` that `reading` needs present (not null) for `meter` to count
    an event: None when it needs none (a count, or a meter without a property). The SQL that
    counts or sums in the database (usage/segments.py, usage/late.py) applies the same rule."""
    return None if meter.aggregation == "count" else meter.property


# `read_property`'s rule in SQL, for an event `e` joined to a meter `m(prop)` whose `prop` is
# read_property(meter): whether the meter counts the event, and what it adds to a count or a
# sum (a count adds 1; an event without the property adds nothing).
COUNTS_SQL = "(m.prop IS NULL OR jsonb_typeof(e.data -> m.prop) <> 'null')"
ADDS_SQL = (
    "CASE WHEN m.prop IS NULL THEN 1 "
    "WHEN jsonb_typeof(e.data -> m.prop) = 'number' THEN (e.data ->> m.prop)::numeric END"
)


def shown(value: Fraction, places: int = 12) -> Decimal:
    """`value` rounded half-even to `places`, trailing zeros dropped (never an exponent)."""
    units = round(value * 10**places)
    while places > 0 and units % 10 == 0:
        units //= 10
        places -= 1
    return Decimal(f"{units}E-{places}")


def readings_of(meter: Meter, rows: Iterable[Any]) -> list[Reading]:
    found = (
        reading(meter, row.time, row.tenant, row.data)
        for row in rows
        if row.type == meter.event_type
    )
    return [r for r in found if r is not None]
