"""The exact hours of count and sum meters without a filter, summed in the database.

An hour a boundary cuts (usage/totals.py, "exact hours") is read event by event for the
meters that need each event (a filter, `max`, `unique_count`, a level). A count or a sum
without a filter needs only what the events add between the instants the range is cut at:
those instants split each exact hour into pieces, and one grouped read sums every piece
(`width_bucket` over the sorted instants). A piece becomes one `Reading` carrying its sum,
its number of events and its end (`until`), so a ledger totals it as it totals events, at
any of the instants it was read for and at whole hours; asked for a total whose bound falls
inside a piece, the ledger refuses (`SplitPiece`) rather than guess.

A property holding something other than a JSON number or null (an event stored before the
policy read that property as a number) is read as `reading` reads it, in Python: the meter
is returned in `odd`, and its hours are read event by event after all.

    read_pieces(session, meters=, hours=, instants=, params=) → Pieces
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.policy.catalog import Meter
from allotment.usage.meters import hour_of, scaled
from allotment.usage.readings import ADDS_SQL, COUNTS_SQL, Reading, read_property

HOUR = timedelta(hours=1)

_PIECES = text(
    "SELECT m.name AS meter, width_bucket(e.time, CAST(:bounds AS timestamptz[])) AS piece, "
    f"count(*) FILTER (WHERE {COUNTS_SQL}) AS events, sum({ADDS_SQL}) AS value, "
    "count(*) FILTER (WHERE m.prop IS NOT NULL "
    "AND jsonb_typeof(e.data -> m.prop) NOT IN ('number', 'null')) AS odd "
    # One index range scan per span (LATERAL: joined plainly, the planner may read the
    # whole month's partition and filter it).
    "FROM unnest(CAST(:f AS timestamptz[]), CAST(:t AS timestamptz[])) AS s(f, t) "
    "CROSS JOIN LATERAL (SELECT u.type, u.time, u.data FROM usage_events u "
    "WHERE u.customer_id = :c AND u.type = ANY(CAST(:types AS text[])) "
    "AND u.time >= s.f AND u.time < s.t AND u.received_at <= :as_of "
    "AND (CAST(:tenant AS text) IS NULL OR u.tenant = :tenant)) AS e "
    "JOIN unnest(CAST(:names AS text[]), CAST(:types AS text[]), CAST(:props AS text[])) "
    "AS m(name, type, prop) ON m.type = e.type "
    "GROUP BY 1, 2"
)


class SplitPiece(RuntimeError):
    """A total was asked for between instants the ledger was not read at: a bug in the
    caller (it must pass every instant it totals at as a cut), never a guess."""


def summed(meter: Meter) -> bool:
    """Whether `meter`'s exact hours can be summed in the database."""
    return meter.aggregation in ("count", "sum") and meter.filter is None


@dataclass
class Pieces:
    by_meter: dict[str, dict[datetime, list[Reading]]] = field(default_factory=dict)
    odd: set[str] = field(default_factory=set)


async def read_pieces(
    session: AsyncSession,
    *,
    meters: Sequence[Meter],
    hours: Iterable[datetime],
    instants: Iterable[datetime],
    params: dict[str, Any],
) -> Pieces:
    """Each of `meters`' sums over the pieces `instants` cut `hours` into, as of
    `params["as_of"]`: by meter, by hour, one Reading per piece holding events."""
    hours = sorted(set(hours))
    found = Pieces({m.name: {h: [] for h in hours} for m in meters})
    if not hours or not meters:
        return found
    wanted = set(hours)
    bounds = sorted(
        {h for h in hours}
        | {h + HOUR for h in hours}
        | {i for i in instants if hour_of(i) in wanted}
    )
    spans = _spans(hours)
    rows = await session.execute(
        _PIECES,
        {
            **params,
            "bounds": bounds,
            "names": [m.name for m in meters],
            "types": [m.event_type for m in meters],
            "props": [read_property(m) for m in meters],
            "f": [f for f, _ in spans],
            "t": [t for _, t in spans],
        },
    )
    by_name = {m.name: m for m in meters}
    for row in rows:
        if row.odd:
            found.odd.add(row.meter)
            continue
        if not row.events:
            continue
        start, until = bounds[row.piece - 1], bounds[row.piece]
        meter = by_name[row.meter]
        found.by_meter[row.meter][hour_of(start)].append(
            Reading(
                start,
                "",
                scaled(meter, Decimal(row.value or 0)),
                events=int(row.events),
                until=until,
            )
        )
    for name in found.odd:
        del found.by_meter[name]
    return found


def _spans(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Consecutive hours as one span: one index range scan each."""
    spans: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if spans and spans[-1][1] == hour:
            spans[-1] = (spans[-1][0], hour + HOUR)
        else:
            spans.append((hour, hour + HOUR))
    return spans
