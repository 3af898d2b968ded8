"""An average meter's readings, read for `usage/totals.py` (the arithmetic: usage/levels.py).

    read_series(session, meters, series_of, params, start, end)

Per meter and tenant: the readings in [start, end) received by `as_of`, in time order, and
the latest one before `start` that the meter reads (its filter may leave the newest out),
carried in however old. Two indexed reads per meter, more only when a filter leaves a whole
page of older readings out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.policy.catalog import Meter
from allotment.usage import levels
from allotment.usage.readings import Reading, reading, readings_of

_TENANT = "(CAST(:tenant AS text) IS NULL OR tenant = :tenant)"
# average meters: their readings in the range, received by as_of, in time order
_SERIES = text(
    "SELECT type, time, coalesce(tenant, '') AS tenant, data FROM usage_events "
    "WHERE customer_id = :c AND type = ANY(:types) AND time >= :f AND time < :t "
    f"AND received_at <= :as_of AND {_TENANT} ORDER BY time, source, id"
)
# ...and per tenant that ever had a reading before the range (its counters say which), the
# latest readings before it, newest first: the first one the meter reads is carried in.
_CARRIED = text(
    "SELECT s.tenant, e.type, e.time, e.data, e.source, e.id FROM (SELECT DISTINCT tenant "
    f"FROM usage_counters WHERE customer_id = :c AND meter = :m AND hour < :f AND {_TENANT}) s "
    "CROSS JOIN LATERAL (SELECT type, time, data, source, id FROM usage_events e "
    "WHERE e.customer_id = :c AND e.type = :type AND coalesce(e.tenant, '') = s.tenant "
    "AND e.time < :f AND e.received_at <= :as_of "
    "ORDER BY e.time DESC, e.source DESC, e.id DESC LIMIT :n) e "
    "ORDER BY s.tenant, e.time DESC, e.source DESC, e.id DESC"
)
_CARRIED_MORE = text(
    "SELECT type, time, data, source, id FROM usage_events WHERE customer_id = :c "
    "AND type = :type AND coalesce(tenant, '') = :tenant AND received_at <= :as_of "
    "AND (time, source, id) < (:time, :source, :id) "
    "ORDER BY time DESC, source DESC, id DESC LIMIT :n"
)
_CARRIED_PAGE = 64


async def read_series(
    session: AsyncSession,
    meters: Sequence[Meter],
    series_of: Callable[[str], dict[str, levels.Series]],
    params: Mapping[str, Any],
    start: datetime,
    end: datetime,
) -> None:
    """Each average meter's readings over [start, end), the last one before `start` carried
    in, per tenant (usage/levels.py)."""
    rows = (
        await session.execute(
            _SERIES,
            {**params, "types": sorted({m.event_type for m in meters}), "f": start, "t": end},
        )
    ).all()
    for meter in meters:
        carried: dict[str, Reading] = {}
        pending: dict[str, Any] = {}  # tenant → the last row of a page none of which it read
        found = await session.execute(
            _CARRIED,
            {**params, "m": meter.name, "type": meter.event_type, "f": start, "n": _CARRIED_PAGE},
        )
        by_tenant: dict[str, list[Any]] = {}
        for row in found:
            by_tenant.setdefault(row.tenant, []).append(row)
        for tenant, page in by_tenant.items():
            _first_read(meter, tenant, page, carried, pending)
        while pending:  # a filter left a whole page out: the page before it, tenant by tenant
            tenant, last = pending.popitem()
            more = await session.execute(
                _CARRIED_MORE,
                {
                    **params,
                    "type": meter.event_type,
                    "tenant": tenant,
                    "time": last.time,
                    "source": last.source,
                    "id": last.id,
                    "n": _CARRIED_PAGE,
                },
            )
            _first_read(meter, tenant, list(more), carried, pending)
        series = series_of(meter.name)
        for tenant, r in carried.items():
            series.setdefault(tenant, levels.Series()).add(r.time, r.value)
        for r in readings_of(meter, rows):
            series.setdefault(r.tenant, levels.Series()).add(r.time, r.value)


def _first_read(
    meter: Meter,
    tenant: str,
    page: list[Any],
    carried: dict[str, Reading],
    pending: dict[str, Any],
) -> None:
    for row in page:  # newest first
        found = reading(meter, row.time, tenant, row.data)
        if found is not None:
            carried[tenant] = found
            return
    if len(page) == _CARRIED_PAGE:
        pending[tenant] = page[-1]
