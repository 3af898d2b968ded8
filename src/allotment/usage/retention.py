"""Raw usage events past their retention (`ALLOTMENT_EVENTS_RETENTION`), purged by the
worker (privacy/retention.py; docs/privacy.md).

Counters and unique sets (`usage_counters`, `usage_uniques`) are kept: totals and invoices
are read from them. Of the events older than the cutoff, the newest of each customer, type
and tenant is kept too: an `average` meter carries the latest reading before a period in
(usage/gauges.py), however old. The dedupe set (`usage_event_ids`: source, id, digest) is
kept, so a redelivered old event is still known.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_PURGE = text(
    "WITH doomed AS (SELECT e.tableoid AS t, e.ctid AS r FROM usage_events e "
    "WHERE e.time < :before AND EXISTS (SELECT 1 FROM usage_events n "
    "WHERE n.customer_id = e.customer_id AND n.type = e.type "
    "AND coalesce(n.tenant, '') = coalesce(e.tenant, '') AND n.time < :before "
    "AND (n.time, n.source, n.id) > (e.time, e.source, e.id)) LIMIT :batch) "
    "DELETE FROM usage_events u USING doomed d WHERE u.tableoid = d.t AND u.ctid = d.r"
)


async def purge(session: AsyncSession, *, before: datetime, batch: int) -> int:
    """Delete up to `batch` events whose time is before `before` (but the newest of each
    series); how many."""
    result = await session.execute(_PURGE, {"before": before, "batch": batch})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
