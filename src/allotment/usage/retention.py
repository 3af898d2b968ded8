"""Raw usage events past their retention (`ALLOTMENT_EVENTS_RETENTION`), purged by the
worker (privacy/retention.py; docs/privacy.md).

Counters and unique sets (`usage_counters`, `usage_uniques`) are kept: totals and invoices
are read from them. Whatever usage/totals.py still reads event by event is kept too, so no
total, invoice or reconciliation changes (docs/privacy.md, "Retention"):

    cut hours      every event in an hour that one of `keep` (customer, instant) cuts, or
                   that one of `activations` cuts (billing splits a month there)
    late months    every event of a customer, type and calendar month that holds an event
                   received at or after the cutoff (a read as of any instant since the cutoff
                   takes those late events off, and rebuilds a unique meter's month)
    averaged       every event of a type in `averaged`: an `average` meter reads its readings
                   in a period one by one (usage/gauges.py)
    series ends    the newest event of each customer, type and tenant: an `average` meter
                   carries the latest reading before a period in (usage/gauges.py)

The dedupe set (`usage_event_ids`: source, id, digest) is kept, so a redelivered old event is
still known.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.usage.meters import hour_of

_HOUR = "date_trunc('hour', e.time, 'UTC')"
_MONTH = "date_trunc('month', e.time, 'UTC')"

_PURGE = text(
    "WITH doomed AS (SELECT e.tableoid AS t, e.ctid AS r FROM usage_events e "
    "WHERE e.time < :before AND EXISTS (SELECT 1 FROM usage_events n "
    "WHERE n.customer_id = e.customer_id AND n.type = e.type "
    "AND coalesce(n.tenant, '') = coalesce(e.tenant, '') AND n.time < :before "
    "AND (n.time, n.source, n.id) > (e.time, e.source, e.id)) "
    f"AND NOT ({_HOUR} = ANY(CAST(:everyone AS timestamptz[]))) "
    "AND NOT (e.type = ANY(CAST(:averaged AS text[]))) "
    "AND NOT EXISTS (SELECT 1 FROM unnest(CAST(:kc AS bigint[]), CAST(:kh AS timestamptz[])) "
    f"AS k(c, h) WHERE k.c = e.customer_id AND k.h = {_HOUR}) "
    "AND NOT EXISTS (SELECT 1 FROM usage_events r WHERE r.customer_id = e.customer_id "
    f"AND r.type = e.type AND r.received_at >= :before AND r.time >= {_MONTH} "
    f"AND r.time < {_MONTH} + interval '1 month') LIMIT :batch) "
    "DELETE FROM usage_events u USING doomed d WHERE u.tableoid = d.t AND u.ctid = d.r"
)


def cut(instants: Iterable[datetime]) -> set[datetime]:
    """The hours these instants cut (an instant on the hour cuts none)."""
    return {hour_of(t.astimezone(UTC)) for t in instants if hour_of(t) != t}


async def purge(
    session: AsyncSession,
    *,
    before: datetime,
    batch: int,
    keep: Iterable[tuple[int, datetime]] = (),
    activations: Iterable[datetime] = (),
    averaged: Iterable[str] = (),
) -> int:
    """Delete up to `batch` events whose time is before `before`, but those billing or a
    usage read still reads (above); how many."""
    kept = sorted({(customer, hour) for customer, at in keep for hour in cut([at])})
    params = {
        "before": before,
        "batch": batch,
        "everyone": sorted(cut(activations)),
        "averaged": sorted(averaged),
        "kc": [customer for customer, _ in kept],
        "kh": [hour for _, hour in kept],
    }
    result = await session.execute(_PURGE, params)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
