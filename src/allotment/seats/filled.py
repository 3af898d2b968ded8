"""seats.limit_reached: an assignment took the last seat of its pool (members or guests), or
a session the last concurrent seat (seats/sessions.py, under the pool lock it holds).

`allotment_assign_seat` returns the seats the pool holds with the new one (migration 0025),
so the assignment knows it filled the pool with no extra statement. In a session (the
route, the general path) the alert is fired in the assignment's transaction. The
one-round-trip fast path (seats/fastpath.py) has no session: it fires in a short transaction
of its own right after the assignment commits, only when the pool was filled. The alert
fires once per pool, limit and calendar month (docs/webhooks.md, "Event types").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.alerts import service as alerts
from allotment.seats.service import Assignment


async def announce_filled(session: AsyncSession, assignment: Assignment, *, now: datetime) -> None:
    """The alert of an assignment that filled its pool (`assignment.filled`)."""
    filled = assignment.filled
    if filled is None:
        return
    await announce_pool_full(
        session,
        customer_id=filled.customer_id,
        customer_key=assignment.customer,
        pool=filled.pool,
        limit=filled.limit,
        subject=assignment.seat.subject,
        now=now,
    )


async def announce_pool_full(
    session: AsyncSession,
    *,
    customer_id: int,
    customer_key: str,
    pool: str,
    limit: int,
    subject: str,
    now: datetime,
) -> None:
    """seats.limit_reached for `pool` (members, guests or sessions), which `subject` filled."""
    await alerts.fire(
        session,
        "seats.limit_reached",
        {
            "customer": customer_key,
            "pool": pool,
            "limit": limit,
            "held": limit,
            "subject": subject,
        },
        customer_id=customer_id,
        customer_key=customer_key,
        subject=pool,
        threshold=str(limit),
        period=now.strftime("%Y-%m"),
        at=now,
    )
