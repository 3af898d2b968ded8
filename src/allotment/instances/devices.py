"""Devices per seat: instances registered under the subject that holds a seat (docs/seats.md,
"Devices per seat").

    admit(session, pools=, subject=, now=)    before a device's row is inserted: the subject
                                              holds a seat, and has fewer live devices than
                                              the plan's `seats.devices_per_seat`
    instances.service.end_devices(...)        a released seat ends its holder's live devices
                                              (end reason `seat_released`)

Both run under the pool lock (`contracts.pools.lock`, the customer's row): registration takes
it before `admit` counts, and a seat release takes it before its devices are ended. So counting a
subject's live devices and inserting one is a single step for every racing registration (no
N+1th device), and a device is never inserted for a seat being released at that moment.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.contracts import pools as pool_locks
from allotment.errors import Conflict

_SEAT = text(
    "SELECT type FROM seats WHERE customer_id = :c AND subject = :s AND released_at IS NULL"
)
_LIVE = text(
    "SELECT count(*) AS held, min(lease_expires_at) AS frees_at FROM instances "
    "WHERE customer_id = :c AND subject = :s AND ended_at IS NULL AND lease_expires_at > :now"
)


class SeatRequired(Conflict):
    """409: a device names a subject that holds no seat."""

    type = "seat-required"
    title = "The subject holds no seat"

    def __init__(self, message: str, *, subject: str) -> None:
        super().__init__(message, extra={"reason": "seat_required", "subject": subject})


async def admit(
    session: AsyncSession, *, pools: pool_locks.Pools, subject: str, now: datetime
) -> None:
    """Refuse a new device of `subject` unless it holds a seat and is under its device limit.
    Call under the pool lock (`pools` is what `contracts.pools.lock` returned)."""
    c = pools.customer_id
    seat = (await session.execute(_SEAT, {"c": c, "s": subject})).scalar()
    if seat is None:
        raise SeatRequired(
            f"Subject {subject!r} holds no seat of customer {pools.customer_key!r}; a device "
            "is registered under a seat holder: assign the seat first.",
            subject=subject,
        )
    seats = pools.limits.seats if pools.limits is not None else None
    limit = seats.devices_per_seat if seats is not None else None
    if limit is None:
        return
    live = (await session.execute(_LIVE, {"c": c, "s": subject, "now": now})).one()
    if live.held >= limit:
        raise pool_locks.PoolFull(
            f"Subject {subject!r} has {live.held} live devices, the plan's limit of {limit} "
            "per seat; deregister one first.",
            reason="device_limit",
            pool="devices",
            limit=limit,
            held=live.held,
            frees_at=live.frees_at,
            subject=subject,
        )
