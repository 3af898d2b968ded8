"""Exact meter totals between any two instants, as known at any instant (bitemporal).

Invoices and the usage API both ask "how much of meter M did this customer use over [a, b),
counting only what had been received by `as_of`?". The hourly counters answer it for whole
hours in one indexed read; they cannot split an hour, nor forget an event that arrived late.
So a `Ledger` holds, per meter:

    counters      the hourly counters (whole hours, everything received so far)
    exact hours   the events themselves, received at or before `as_of`, for every hour that
                  a boundary cuts (a contract starting 19:53, an amendment, a policy
                  activation, an end, a usage range's `from`/`to`) and, for `max`, every
                  hour that holds an event received after `as_of`
    minus         count and sum: what the events received after `as_of` added to each
                  hour's counter, taken off it again (they are few: the late window)

`Ledger.total(a, b)` sums the whole hours from the counters and each exact hour's events
whose `time` falls in [a, b). Additive meters (count, sum) add; `max` takes the greatest;
`unique_count` counts a value at the instant it was first seen in its calendar month (the
hour's counter holds the values first seen in it, `usage_uniques.first_hour` says which; in an
exact hour, the first event carrying the value places it). A unique meter with events received
after `as_of` in a month is rebuilt from that month's events (first occurrences can move).

Levels (usage/levels.py) read the same ledger: a percentile meter ranks the hours' totals
above, each hour cut by the range counted from its events; an `average` meter keeps its
readings themselves (`series`, per tenant), those in the range received by `as_of` and the
last one before it, carried in. A level is not measured past `as_of`: time not yet elapsed
is neither averaged nor ranked. A meter's filter and multiplier apply wherever events are
read back (`reading`), as at ingest.

docs/usage.md ("Totals at any instant") and docs/billing.md ("Boundaries") work examples.

    read(session, customer_id=, meters=, start=, end=, cuts=, as_of=, tenant=) → Ledgers
    Ledgers.ledger(meter).total(start, end)  → Total(quantity, events)
    Ledgers.late                              → what arrived after as_of, by meter
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.policy.catalog import Meter
from allotment.usage import levels, segments
from allotment.usage.gauges import read_series
from allotment.usage.late import counted as counted_late
from allotment.usage.meters import EXACT, exact_sum, hour_of, month_of, scaled
from allotment.usage.readings import (
    ADDS_SQL,
    COUNTS_SQL,
    Reading,
    read_property,
    readings_of,
    shown,
)

HOUR = timedelta(hours=1)
ZERO = Decimal(0)

_TENANT = "(CAST(:tenant AS text) IS NULL OR tenant = :tenant)"
_CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")
_COUNTERS = text(
    "SELECT meter, hour, value, events FROM usage_counters WHERE customer_id = :c "
    f"AND meter = ANY(:meters) AND hour >= :f AND hour < :t AND {_TENANT}"
)
# Per additive meter and hour: the late events' count and sum (a count meter's value is its
# count; an event without the meter's property adds nothing, as at ingest).
_LATE_SUMS = text(
    "SELECT m.name AS meter, date_trunc('hour', e.time, 'UTC') AS hour, "
    f"count(*) FILTER (WHERE {COUNTS_SQL}) AS events, sum({ADDS_SQL}) AS value, "
    f"count(*) FILTER (WHERE {COUNTS_SQL} AND e.time >= :r0 AND e.time < :r1) "
    "AS shown_events, "
    f"sum({ADDS_SQL}) FILTER (WHERE e.time >= :r0 AND e.time < :r1) AS shown_value "
    "FROM unnest(CAST(:names AS text[]), CAST(:types AS text[]), CAST(:props AS text[])) "
    "AS m(name, type, prop) JOIN usage_events e ON e.customer_id = :c AND e.type = m.type "
    "AND e.received_at > :as_of AND e.time >= :f AND e.time < :t "
    "WHERE (CAST(:tenant AS text) IS NULL OR e.tenant = :tenant) GROUP BY 1, 2"
)
# Events received after `as_of` whose time is in [f, t): few (they arrive inside the late
# window), found through ix_usage_events_customer_id_received_at (migration 0012).
_LATE = text(
    "SELECT type, time, coalesce(tenant, '') AS tenant, data FROM usage_events "
    "WHERE customer_id = :c AND received_at > :as_of AND type = ANY(:types) "
    f"AND time >= :f AND time < :t AND {_TENANT}"
)
# The events of a few spans (the exact hours), one index range scan each.
_EVENTS = text(
    "SELECT e.type, e.time, coalesce(e.tenant, '') AS tenant, e.data "
    "FROM unnest(CAST(:f AS timestamptz[]), CAST(:t AS timestamptz[])) AS s(f, t) "
    "JOIN usage_events e ON e.customer_id = :c AND e.type = ANY(:types) "
    "AND e.time >= s.f AND e.time < s.t "
    "WHERE e.received_at <= :as_of AND (CAST(:tenant AS text) IS NULL OR e.tenant = :tenant) "
    "ORDER BY e.time, e.source, e.id"
)
_FIRST_SEEN = text(
    "SELECT meter, first_hour, tenant, value FROM usage_uniques WHERE customer_id = :c "
    f"AND meter = ANY(:meters) AND first_hour = ANY(:hours) AND {_TENANT}"
)


@dataclass(frozen=True, slots=True)
class Total:
    quantity: Decimal
    events: int
    exact: Fraction | None = None  # an average, exactly (`quantity` shows it to 12 places)


@dataclass
class Ledger:
    """One meter's usage, exact at any instant; built by `read` (or by hand, in tests)."""

    meter: Meter
    counters: dict[datetime, tuple[Decimal, int]] = field(default_factory=dict)  # by hour
    exact: dict[datetime, list[Reading]] = field(default_factory=dict)  # by hour, in time order
    # unique_count: per exact hour, the (tenant, token)s first seen in it that month
    first_seen: dict[datetime, set[tuple[str, str]]] = field(default_factory=dict)
    # count and sum: per hour, what the events received after as_of added to its counter
    minus: dict[datetime, tuple[Decimal, int]] = field(default_factory=dict)
    # average: each tenant's readings, received by as_of, the last before the range included
    series: dict[str, levels.Series] = field(default_factory=dict)
    as_of: datetime | None = None  # a level is measured up to here, never past it
    _sorted: list[datetime] | None = field(default=None, repr=False, compare=False)

    def total(self, start: datetime, end: datetime) -> Total:
        meter = self.meter
        if meter.is_level() and self.as_of is not None:
            end = min(end, self.as_of)
        if meter.aggregation == "average":
            mean = levels.average(self.series.values(), start, end)
            events = sum(one.readings(start, end) for one in self.series.values())
            return Total(shown(mean), events, exact=mean)
        hourly = self._hourly(start, end)
        events = sum(count for _, count in hourly)
        if meter.percentile is not None:
            hours = levels.clock_hours(start, end)
            found = levels.percentile([v for v, _ in hourly], hours, meter.percentile)
            return Total(found, events)
        values = [value for value, count in hourly if count]
        if meter.aggregation == "max":
            return Total(max(values) if values else ZERO, events)
        return Total(exact_sum(values), events)

    def _hourly(self, start: datetime, end: datetime) -> list[tuple[Decimal, int]]:
        """Each hour's (value, events) inside [start, end), for the hours holding events."""
        values: list[tuple[Decimal, int]] = []
        hours = self._hours()
        for hour in hours[bisect_left(hours, start) : bisect_right(hours, end - HOUR)]:
            if hour in self.exact:
                continue
            value, count = self.counters[hour]
            if hour in self.minus:
                late_value, late_count = self.minus[hour]
                value, count = EXACT.subtract(value, late_value), count - late_count
            if count:
                values.append((value, count))
        for hour, readings in self.exact.items():
            if hour + HOUR <= start or hour >= end:
                continue
            value, count = self._hour(hour, readings, start, end)
            if count:
                values.append((value, count))
        return values

    def hours(self) -> list[datetime]:
        """Every hour holding something counted, in order."""
        found = set(self.counters) | {h for h, readings in self.exact.items() if readings}
        for one in self.series.values():
            found.update(hour_of(t) for t in one.times)
        return sorted(found)

    def _hours(self) -> list[datetime]:
        if self._sorted is None or len(self._sorted) != len(self.counters):
            self._sorted = sorted(self.counters)
        return self._sorted

    def _hour(
        self, hour: datetime, readings: list[Reading], start: datetime, end: datetime
    ) -> tuple[Decimal, int]:
        inside = [r for r in readings if start <= r.time < end]
        aggregation = self.meter.aggregation
        if aggregation in ("count", "sum"):  # a count's reading is 1, times its multiplier
            for piece in readings:
                if piece.until is not None and (
                    piece.time < start < piece.until or piece.time < end < piece.until
                ):
                    raise segments.SplitPiece(
                        f"{self.meter.name}: a total from {start} to {end} splits the piece "
                        f"[{piece.time}, {piece.until}) it was read in"
                    )
            return exact_sum(r.value for r in inside), sum(r.events for r in inside)
        if aggregation == "max":
            return (max(r.value for r in inside) if inside else ZERO), len(inside)
        first = self.first_seen.get(hour, set())
        placed: set[tuple[str, str]] = set()
        counted = 0
        for one in readings:  # in time order: the first event carrying a value places it
            key = (one.tenant, one.value)
            if key in first and key not in placed:
                placed.add(key)
                counted += start <= one.time < end
        return Decimal(counted), len(inside)


@dataclass(frozen=True)
class Late:
    """Events received after `as_of` with a time in the range that some meter counts: what a
    later look would add."""

    events: int
    by_meter: Mapping[str, Total]


@dataclass(frozen=True)
class Ledgers:
    by_meter: Mapping[str, Ledger]
    late: Late

    def ledger(self, name: str) -> Ledger | None:
        return self.by_meter.get(name)


def cut_hours(instants: Iterable[datetime], start: datetime, end: datetime) -> set[datetime]:
    """The hours an instant in [start, end] cuts (an instant on the hour cuts none)."""
    return {hour_of(t) for t in instants if start <= t <= end and hour_of(t) != t}


def first_occurrences(readings: Iterable[Reading]) -> dict[datetime, set[tuple[str, str]]]:
    """unique_count from events alone: per hour, the (tenant, token)s first seen in it in
    their calendar month. `readings` in time order."""
    seen: set[tuple[datetime, str, str]] = set()
    out: dict[datetime, set[tuple[str, str]]] = {}
    for r in readings:
        key = (month_of(r.time), r.tenant, r.value)
        if key not in seen:
            seen.add(key)
            out.setdefault(hour_of(r.time), set()).add((r.tenant, r.value))
    return out


async def read(
    session: AsyncSession,
    *,
    customer_id: int,
    meters: Sequence[Meter],
    start: datetime,
    end: datetime,
    cuts: Iterable[datetime] = (),
    as_of: datetime,
    tenant: str | None = None,
    report: tuple[datetime, datetime] | None = None,
) -> Ledgers:
    """Every meter's ledger over [start, end) as of `as_of`, exact at `start`, `end` and each
    of `cuts`; `late` reports the events of these meters received after `as_of` with a time
    in `report` (default: [start, end)). Seven indexed reads at most, whatever the range:
    counters, the late events (counted, and those only a filter decides read back; summed per
    hour; the max and unique meters' own), the exact hours' events, and (unique meters) the
    values first seen in them."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    cuts = [cut.astimezone(UTC) for cut in cuts]
    # Plans for these parameters, not generic ones, until the transaction ends: psycopg
    # prepares a statement run 5 times on a connection, and PostgreSQL then settles on a
    # generic plan, blind to the instants. For "received after as_of" and "time in [f, t)"
    # that plan reads a month of usage_events instead of one hour (docs/performance.md,
    # "Plans"). Only here: planning every statement costs the other reads milliseconds.
    await session.execute(_CUSTOM_PLANS)
    params: dict[str, Any] = {"c": customer_id, "tenant": tenant, "as_of": as_of}
    names = [m.name for m in meters]
    floor = hour_of(start)
    ceiling = hour_of(end) if hour_of(end) == end else hour_of(end) + HOUR
    shown = report or (start, end)
    ledgers = {m.name: Ledger(m) for m in meters}
    late_by_meter: dict[str, Total] = {}
    bounds = cut_hours((start, end, *cuts), start, end)
    wanted: dict[str, set[datetime]] = {m.name: set(bounds) for m in meters}  # read from events
    rebuilt: set[str] = set()  # unique meters with late events: from events alone
    # A filtered count or sum is taken off in Python: SQL cannot evaluate its filter.
    additive = [m for m in meters if m.aggregation in ("count", "sum") and m.filter is None]
    others = [m for m in meters if m.aggregation not in ("count", "sum") or m.filter is not None]
    # Additive meters: what the late events added to each hour, summed in the database,
    # comes off that hour's counter; only the cut hours are read event by event.
    if additive:
        sums = await session.execute(
            _LATE_SUMS,
            {
                **params,
                "f": min(floor, shown[0]),
                "t": max(end, shown[1]),
                "names": [m.name for m in additive],
                "types": [m.event_type for m in additive],
                "props": [read_property(m) for m in additive],
                "r0": shown[0],
                "r1": shown[1],
            },
        )
        shown_sums: dict[str, tuple[Decimal, int]] = {}
        for row in sums:
            meter = ledgers[row.meter].meter
            value, count = scaled(meter, Decimal(row.value or 0)), int(row.events)
            if not count:
                continue
            hour = row.hour.astimezone(UTC)
            if floor <= hour < ceiling:
                ledgers[row.meter].minus[hour] = (value, count)
            if row.shown_events:
                before = shown_sums.get(row.meter, (ZERO, 0))
                shown_value = scaled(meter, Decimal(row.shown_value or 0))
                shown_sums[row.meter] = (
                    EXACT.add(before[0], shown_value),
                    before[1] + row.shown_events,
                )
        for name, (value, count) in shown_sums.items():
            late_by_meter[name] = Total(value, count)
    # max and unique_count: the late events themselves (from the month's start: a late
    # value earlier in the month moves a unique count's first occurrence).
    if others:
        late_rows = (
            await session.execute(
                _LATE,
                {
                    **params,
                    "f": min(month_of(floor), shown[0]),
                    "t": max(end, shown[1]),
                    "types": sorted({m.event_type for m in others}),
                },
            )
        ).all()
        for meter in others:
            late = readings_of(meter, late_rows)
            shown_late = [r for r in late if shown[0] <= r.time < shown[1]]
            if meter.aggregation in ("count", "sum"):  # filtered: as the SQL above would
                _take_off(ledgers[meter.name], late, shown_late, floor, ceiling, late_by_meter)
                continue
            if shown_late:
                greatest = meter.aggregation in ("max", "average")
                values = [r.value for r in shown_late] if greatest else []
                late_by_meter[meter.name] = Total(
                    max(values) if values else Decimal(len(shown_late)), len(shown_late)
                )
            if meter.aggregation == "unique_count" and late:
                rebuilt.add(meter.name)
            wanted[meter.name] |= {hour_of(r.time) for r in late if floor <= r.time < ceiling}
    types = [m.event_type for m in meters]
    if not others and len(set(types)) == len(types):
        # One meter per event type, each counting what the SQL above summed: its late events
        # are the late events some meter counted, with no second read.
        reported = sum(total.events for total in late_by_meter.values())
    else:
        reported = await counted_late(session, meters, {**params, "f": shown[0], "t": shown[1]})
    if names:
        counter_rows = (
            await session.execute(_COUNTERS, {**params, "meters": names, "f": floor, "t": end})
        ).all()
        for row in counter_rows:
            if row.meter in rebuilt:
                continue
            ledger = ledgers[row.meter]
            hour = row.hour.astimezone(UTC)
            value, events = ledger.counters.get(hour, (ZERO, 0))
            if ledger.meter.aggregation == "max":
                ledger.counters[hour] = (
                    max(value, Decimal(row.value)) if events else Decimal(row.value),
                    events + int(row.events),
                )
            else:
                ledger.counters[hour] = (
                    EXACT.add(value, Decimal(row.value)),
                    events + int(row.events),
                )
    # Count and sum meters without a filter: their exact hours summed piece by piece in the
    # database (usage/segments.py); the rest, and any with odd stored values, event by event.
    pieces = await segments.read_pieces(
        session,
        meters=[m for m in meters if segments.summed(m)],
        hours=bounds,
        instants=(start, end, *cuts),
        params=params,
    )
    for name, by_hour in pieces.by_meter.items():
        ledgers[name].exact.update(by_hour)
    by_event = [m for m in meters if m.name not in pieces.by_meter]
    # The events behind the exact hours (and whole months, for rebuilt unique meters).
    spans: list[tuple[datetime, datetime]] = []
    for name, hours in wanted.items():
        if name in pieces.by_meter:
            continue
        if name in rebuilt:
            spans.append((month_of(floor), _next_month(month_of(hour_of(end - HOUR)))))
        spans.extend((h, h + HOUR) for h in hours)
    if spans:
        merged = _merge(spans)
        rows = (
            await session.execute(
                _EVENTS,
                {
                    **params,
                    "types": sorted({m.event_type for m in by_event}),
                    "f": [f for f, _ in merged],
                    "t": [t for _, t in merged],
                },
            )
        ).all()
        for meter in by_event:
            ledger = ledgers[meter.name]
            readings = readings_of(meter, rows)
            if meter.name in rebuilt:
                ledger.counters.clear()
                ledger.first_seen = first_occurrences(readings)
                for r in readings:
                    if floor <= r.time < ceiling:
                        ledger.exact.setdefault(hour_of(r.time), []).append(r)
                continue
            hours = wanted[meter.name]
            for hour in hours:
                ledger.exact[hour] = []
            for r in readings:
                hour = hour_of(r.time)
                if hour in hours:
                    ledger.exact[hour].append(r)
    averages = [m for m in meters if m.aggregation == "average"]
    if averages:
        await read_series(session, averages, lambda name: ledgers[name].series, params, start, end)
    for ledger in ledgers.values():
        ledger.as_of = as_of
    unique = [m.name for m in meters if m.aggregation == "unique_count" and m.name not in rebuilt]
    exact_hours = sorted({h for name in unique for h in ledgers[name].exact})
    if unique and exact_hours:
        found = await session.execute(
            _FIRST_SEEN, {**params, "meters": unique, "hours": exact_hours}
        )
        for row in found:
            ledgers[row.meter].first_seen.setdefault(row.first_hour.astimezone(UTC), set()).add(
                (row.tenant, row.value)
            )
    return Ledgers(
        by_meter=ledgers,
        late=Late(events=reported, by_meter=late_by_meter),
    )


def _take_off(
    ledger: Ledger,
    late: list[Reading],
    shown_late: list[Reading],
    floor: datetime,
    ceiling: datetime,
    late_by_meter: dict[str, Total],
) -> None:
    """A filtered count or sum: what its late events added to each hour comes off that hour's
    counter (`minus`), and those in the reported range are the late total."""
    for r in late:
        hour = hour_of(r.time)
        if floor <= hour < ceiling:
            value, count = ledger.minus.get(hour, (ZERO, 0))
            ledger.minus[hour] = (EXACT.add(value, r.value), count + 1)
    if shown_late:
        late_by_meter[ledger.meter.name] = Total(
            exact_sum(r.value for r in shown_late), len(shown_late)
        )


def _merge(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _next_month(month: datetime) -> datetime:
    return (month + timedelta(days=32)).replace(day=1)
