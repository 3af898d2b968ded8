"""Worker task: end instances whose lease lapsed, at their expiry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.instances.service import TABLE, audit_view
from allotment.kit import leases
from allotment.usage import lifecycle


async def reap_instances(session: AsyncSession, *, now: datetime, batch: int = 500) -> int:
    """End up to `batch` lapsed instances; safe with any number of reapers at once.

    No invalidation: see `seats.tasks.reap_sessions`."""
    rows = await leases.reap(session, TABLE, now, batch=batch)
    for row in rows:
        lifecycle.record(
            session,
            customer_id=row.customer_id,
            actor="system:reaper",
            action="instance.expired",
            target_type="instance",
            target_key=f"{row.customer_key}/{row.id}",
            after=audit_view(row),
        )
    return len(rows)
