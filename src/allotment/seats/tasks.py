"""Worker task: end sessions whose lease lapsed, at their expiry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.kit import leases
from allotment.seats.sessions import TABLE, audit_view
from allotment.usage import lifecycle


async def reap_sessions(session: AsyncSession, *, now: datetime, batch: int = 500) -> int:
    """End up to `batch` lapsed sessions; safe with any number of reapers at once.

    No invalidation: a lapsed session stopped counting at its expiry, and every snapshot
    that held it live was valid only until then."""
    rows = await leases.reap(session, TABLE, now, batch=batch)
    for row in rows:
        lifecycle.record(
            session,
            customer_id=row.customer_id,
            actor="system:reaper",
            action="session.expired",
            target_type="session",
            target_key=f"{row.customer_key}/{row.id}",
            after=audit_view(row),
        )
    return len(rows)
