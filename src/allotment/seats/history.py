"""What a customer's seats are and were: the seats domain's reads of its tables for the
domains that price or decide on them.

For checks (check/holdings.py unites them in one select, in its row shape):

    HELD_NOW         live seats: ('s', subject, type, tenant)
    SESSIONS_NOW     live concurrent-seat sessions: ('x', subject, tenant, expires_at)

For billing (billing/data.py), which prices seats by the time each was held:

    members(session, customer_id=, start=, end=)            named member seats held in
                                                            [start, end): (start, end) rows
    sessions(session, customer_id=, start=, end=, now=)     concurrent-seat sessions, a
                                                            live one held until its expiry
                                                            or `now`, whichever is first
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

HELD_NOW = (
    "SELECT 's' AS k, subject AS name, type AS detail, tenant, NULL::timestamptz AS until, "
    "0 AS weight, NULL::text AS extra FROM seats WHERE customer_id = :c AND released_at IS NULL"
)
SESSIONS_NOW = (
    "SELECT 'x', subject, NULL, tenant, expires_at, 0, NULL FROM seat_sessions "
    "WHERE customer_id = :c AND ended_at IS NULL AND expires_at > :now"
)
_MEMBERS = text(
    "SELECT assigned_at AS start, released_at AS end FROM seats WHERE customer_id = :c "
    "AND type = 'member' AND assigned_at < :to AND (released_at IS NULL OR released_at > :from) "
    "ORDER BY assigned_at, id"
)
_SESSIONS = text(
    "SELECT opened_at AS start, coalesce(ended_at, least(expires_at, :now)) AS end "
    "FROM seat_sessions WHERE customer_id = :c AND opened_at < :to "
    "AND coalesce(ended_at, least(expires_at, :now)) > :from ORDER BY opened_at, id"
)

_OPEN_BURST = text(
    'SELECT started_at, window_ends_at, "limit", extra FROM seat_bursts '
    "WHERE customer_id = :c AND ended_at IS NULL"
)


async def open_burst(session: AsyncSession, *, customer_id: int) -> Any | None:
    """The customer's open burst episode (members over the limit): when it started, when
    its window ends, and the limit and extra it opened with; None when there is none."""
    return (await session.execute(_OPEN_BURST, {"c": customer_id})).one_or_none()


async def members(
    session: AsyncSession, *, customer_id: int, start: datetime, end: datetime
) -> Sequence[Any]:
    params = {"c": customer_id, "from": start, "to": end}
    return (await session.execute(_MEMBERS, params)).all()


async def sessions(
    session: AsyncSession, *, customer_id: int, start: datetime, end: datetime, now: datetime
) -> Sequence[Any]:
    params = {"c": customer_id, "from": start, "to": end, "now": now}
    return (await session.execute(_SESSIONS, params)).all()
