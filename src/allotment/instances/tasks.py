"""Worker task: end instances whose lease lapsed, at their expiry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.contracts import pools
from allotment.instances.service import TABLE, audit_view


async def reap_instances(session: AsyncSession, *, now: datetime, batch: int = 500) -> int:
    """End up to `batch` lapsed instances at their expiry (`contracts.pools.reap_leases`)."""
    return await pools.reap_leases(
        session, TABLE, "instance", view=audit_view, now=now, batch=batch
    )
