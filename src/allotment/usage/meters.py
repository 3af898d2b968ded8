"""Meters, pure: which events a meter reads, and the counter deltas a set of new events makes.

    aggregation    per (customer, tenant, meter, hour) counter        reading a property?
    count          +1 per event                                       no
    sum            + data[property] (a number ≥ 0; below 0 only on a  yes
                   meter with `corrections: true`)
    max            greatest data[property] seen (any number: a        yes
                   reading, which may be negative)
    unique_count   +1 the first time a value of data[property] is     yes (any JSON scalar)
                   seen in the calendar month (UTC)
    average        greatest data[property] seen, as `max` (a gauge:   yes
                   its totals come from the readings, usage/levels.py)

A meter's `filter` decides first: an event it does not hold for is not counted by that meter
(and need not carry its property); its `multiplier` scales each quantity (a count's 1 too),
exactly, before it reaches a counter.

Counters are hourly; a period's total is the sum of its hours (the greatest, for `max`).
Unique counts are deduplicated per month, so the sum of a month's hours is the month's exact
unique count (an hour's or a day's figure counts the values first seen in it that month).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from allotment.policy.catalog import Meter
from allotment.usage.events import Event, Problem

# A metered quantity is at most this in size: 10^15 units per event. JSON numbers reach us as
# 64-bit integers or doubles, and a double holds 15 significant digits exactly; anything
# larger in one event is a unit mistake, and would make totals and amounts inexact.
MAX_QUANTITY = 10**15
_TOO_LARGE = f"at most {MAX_QUANTITY:.0e} in size (one event; send a smaller unit?)"
_NUMERIC = (int, float)
_NEGATIVE = (
    "meter '{meter}' sums quantities of zero or more; a negative one is a correction, which "
    "the meter accepts only when it declares `corrections: true`"
)


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def month_of(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def by_type(meters: Iterable[Meter]) -> dict[str, tuple[Meter, ...]]:
    found: dict[str, list[Meter]] = {}
    for meter in meters:
        found.setdefault(meter.event_type, []).append(meter)
    return {kind: tuple(sorted(group, key=lambda m: m.name)) for kind, group in found.items()}


def data_problems(event: Event, meters: Sequence[Meter]) -> list[Problem]:
    """What the meters reading `event` cannot read from its `data`: a missing property, a
    value of the wrong kind, or a negative quantity for a `sum` meter that takes no
    corrections (`max` and `unique_count` read any number: a reading, a value)."""
    problems: list[Problem] = []
    for meter in meters:
        if meter.aggregation == "count" or meter.property is None:
            continue
        if not meter.counts(event.data):
            continue
        if not isinstance(event.data, dict):  # an array or a scalar has no properties
            return [
                {
                    "path": "data",
                    "message": f"must be an object: meter '{meter.name}' reads its "
                    f"property '{meter.property}'",
                }
            ]
        path = f"data.{meter.property}"
        value = event.data.get(meter.property)
        if value is None:
            problems.append({"path": path, "message": f"meter '{meter.name}' needs this property"})
        elif meter.aggregation in ("sum", "max", "average"):
            if isinstance(value, bool) or not isinstance(value, _NUMERIC):
                problems.append(
                    {"path": path, "message": f"meter '{meter.name}' needs a number here"}
                )
            elif isinstance(value, float) and value != value:  # NaN
                problems.append({"path": path, "message": "not a number"})
            elif abs(value) > MAX_QUANTITY:
                problems.append({"path": path, "message": _TOO_LARGE})
            elif value < 0 and meter.aggregation == "sum" and not meter.corrections:
                problems.append({"path": path, "message": _NEGATIVE.format(meter=meter.name)})
        elif isinstance(value, (dict, list)):
            problems.append(
                {"path": path, "message": f"meter '{meter.name}' counts unique scalar values"}
            )
    return problems


def quantity(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return Decimal(0)


# Wide enough for any product of a quantity (≤ 10^15, 15 significant digits read from JSON)
# and a multiplier (≤ 10^9, 12 places): multiplying never rounds.
EXACT = Context(prec=80)


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """Σ values without rounding (the default context keeps 28 digits; a scaled quantity may
    carry more)."""
    total = Decimal(0)
    for value in values:
        total = EXACT.add(total, value)
    return total


def scaled(meter: Meter, amount: Decimal) -> Decimal:
    """`amount` times the meter's multiplier, exactly (unchanged without one)."""
    if meter.multiplier is None:
        return amount
    return EXACT.multiply(amount, meter.multiplier)


CounterKey = tuple[int, str, str, datetime]  # (customer_id, tenant or "", meter, hour)


UniqueKey = tuple[int, str, str, datetime, str]  # (customer_id, tenant, meter, month, value)


@dataclass
class Delta:
    value: Decimal = Decimal(0)
    events: int = 0
    is_max: bool = False


@dataclass(frozen=True, slots=True)
class Reading:
    """One event as its customer and meters see it (after validation)."""

    customer_id: int
    tenant: str | None
    event: Event


def deltas(
    readings: Iterable[Reading], meters: Mapping[str, Sequence[Meter]]
) -> tuple[dict[CounterKey, Delta], dict[UniqueKey, datetime]]:
    """The counter changes `readings` make, by counter; and for unique_count meters, each
    (customer, tenant, meter, month, value) with the earliest hour it occurs in `readings`,
    for the caller to add to the month's set and count (+1 at that hour) only when new.
    `events` counts, per counter, the events that reached it (unique ones included)."""
    out: dict[CounterKey, Delta] = {}
    uniques: dict[UniqueKey, datetime] = {}
    for reading in readings:
        event = reading.event
        group = meters.get(event.type)
        if not group:
            continue
        hour = hour_of(event.time)
        tenant = reading.tenant or ""
        for meter in group:
            if not meter.counts(event.data):
                continue
            key = (reading.customer_id, tenant, meter.name, hour)
            delta = out.get(key)
            if delta is None:
                delta = out[key] = Delta(is_max=meter.aggregation in ("max", "average"))
            delta.events += 1
            if meter.aggregation == "count":
                delta.value = EXACT.add(delta.value, scaled(meter, Decimal(1)))
                continue
            raw = event.data[meter.property]  # validated by data_problems
            if meter.aggregation == "sum":
                delta.value = EXACT.add(delta.value, scaled(meter, quantity(raw)))
            elif meter.aggregation in ("max", "average"):
                amount = scaled(meter, quantity(raw))
                if delta.events == 1 or amount > delta.value:
                    delta.value = amount
            else:
                unique = (reading.customer_id, tenant, meter.name, month_of(hour), token(raw))
                seen = uniques.get(unique)
                if seen is None or hour < seen:
                    uniques[unique] = hour
    return out, uniques


def token(value: Any) -> str:
    """A unique value's identity: type-tagged, so 1, "1" and true stay apart."""
    if isinstance(value, bool):
        return f"b:{value}"
    if isinstance(value, (int, float)):
        return f"n:{quantity(value).normalize()}"
    return f"s:{value}"


def corrections(reading: Reading, meters: Sequence[Meter]) -> list[tuple[Meter, Decimal]]:
    """The negative quantities `reading` brings to `sum` meters that take corrections."""
    found: list[tuple[Meter, Decimal]] = []
    data = reading.event.data
    for meter in meters:
        if (
            meter.corrections
            and meter.aggregation == "sum"
            and isinstance(data, dict)
            and meter.counts(data)
        ):
            amount = scaled(meter, quantity(data[meter.property]))  # validated by data_problems
            if amount < 0:
                found.append((meter, amount))
    return found
