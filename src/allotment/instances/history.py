"""What a customer's instances are and were: the instances domain's reads of its table for
the domains that price or decide on them.

    HELD_NOW   for checks (check/holdings.py, in its row shape): each fingerprint's latest
               registration among the live ones and those ended since `:recent` (a
               deregistered one, or one ended with its holder's seat, then reads as unknown, a
               lapsed one as lease_expired), with
               its kind, environment and metadata (what rules read) as one JSON array

For the signed artifacts (artifacts/service.py), which bind one to a machine:

    live(session, customer_id=, fingerprint=, now=)   the fingerprint's live registration
                                                      (not ended, lease ahead of `now`), or
                                                      None

For billing (billing/data.py), which prices instance-hours by weight:

    held(session, customer_id=, start=, end=, now=)   (start, end, weight, kind) rows of the
                                                      registrations held in [start, end); a
                                                      live one until its lease's expiry or
                                                      `now`, whichever is first
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

HELD_NOW = (
    "SELECT DISTINCT ON (fingerprint) 'i', fingerprint, coalesce(end_reason, 'live'), tenant, "
    "lease_expires_at, weight, jsonb_build_array(kind, environment, metadata)::text "
    "FROM instances WHERE customer_id = :c AND (ended_at IS NULL OR ended_at > :recent) "
    "ORDER BY fingerprint, registered_at DESC"
)
_HELD = text(
    "SELECT registered_at AS start, coalesce(ended_at, least(lease_expires_at, :now)) AS end, "
    "weight, kind FROM instances WHERE customer_id = :c AND registered_at < :to "
    "AND coalesce(ended_at, least(lease_expires_at, :now)) > :from ORDER BY registered_at, id"
)

_LIVE = text(
    "SELECT id, fingerprint, kind, environment, tenant, registered_at, lease_expires_at "
    "FROM instances WHERE customer_id = :c AND fingerprint = :f AND ended_at IS NULL "
    "AND lease_expires_at > :now"
)


async def live(
    session: AsyncSession, *, customer_id: int, fingerprint: str, now: datetime
) -> Any | None:
    params = {"c": customer_id, "f": fingerprint, "now": now}
    return (await session.execute(_LIVE, params)).one_or_none()


async def held(
    session: AsyncSession, *, customer_id: int, start: datetime, end: datetime, now: datetime
) -> Sequence[Any]:
    params = {"c": customer_id, "from": start, "to": end, "now": now}
    return (await session.execute(_HELD, params)).all()
