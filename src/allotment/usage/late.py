"""How many events received after an instant some meter counts (a ledger's `late.events`).

An event of a metered type that every meter's filter leaves out, or that lacks the property
each reads, is billed nowhere, so it is not late usage either (docs/billing.md, "Taken at an
instant"). A late hour holds thousands of events: meters without a filter decide in the
database, by the rule `reading` applies (`read_property`); only the events none of them
counts, of a type a filtered meter reads, are read back for the filter.

    counted(session, meters, params) → int   (params: c, tenant, as_of, f, t)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.policy.catalog import Meter
from allotment.usage.readings import COUNTS_SQL, read_property, reading

_LATE_EVENTS = (
    "FROM usage_events e WHERE e.customer_id = :c AND e.received_at > :as_of "
    "AND e.time >= :f AND e.time < :t "
    "AND (CAST(:tenant AS text) IS NULL OR e.tenant = :tenant)"
)
# An event some meter without a filter counts: of its type, carrying the property it reads.
_PLAIN_COUNTS = (
    "EXISTS (SELECT 1 FROM unnest(CAST(:utypes AS text[]), CAST(:uprops AS text[])) "
    f"AS m(type, prop) WHERE m.type = e.type AND {COUNTS_SQL})"
)
_COUNTED = text(f"SELECT count(*) {_LATE_EVENTS} AND e.type = ANY(:types) AND {_PLAIN_COUNTS}")
_LEFT = text(
    "SELECT e.type, e.time, coalesce(e.tenant, '') AS tenant, e.data "
    f"{_LATE_EVENTS} AND e.type = ANY(:ftypes) AND NOT {_PLAIN_COUNTS}"
)


async def counted(session: AsyncSession, meters: Sequence[Meter], params: dict[str, Any]) -> int:
    """The events received after `as_of` with a time in [f, t) that some of `meters` counts."""
    if not meters:
        return 0
    plain = [m for m in meters if m.filter is None]
    filtered = [m for m in meters if m.filter is not None]
    params = {
        **params,
        "types": sorted({m.event_type for m in meters}),
        "utypes": [m.event_type for m in plain],
        "uprops": [read_property(m) for m in plain],
    }
    found = int((await session.execute(_COUNTED, params)).scalar_one())
    if filtered:
        rows = await session.execute(
            _LEFT, {**params, "ftypes": sorted({m.event_type for m in filtered})}
        )
        found += sum(
            any(
                reading(meter, row.time, row.tenant, row.data) is not None
                for meter in filtered
                if meter.event_type == row.type
            )
            for row in rows
        )
    return found
