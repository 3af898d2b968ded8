"""Worker task: end sessions whose lease lapsed, at their expiry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.contracts import pools
from allotment.seats.sessions import TABLE, audit_view


async def reap_sessions(session: AsyncSession, *, now: datetime, batch: int = 500) -> int:
    """End up to `batch` lapsed sessions at their expiry (`contracts.pools.reap_leases`)."""
    return await pools.reap_leases(session, TABLE, "session", view=audit_view, now=now, batch=batch)
