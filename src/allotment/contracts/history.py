"""A contract as billing reads it (billing/data.py): the contract row with its customer's
key, and its revisions as recorded by an instant. The contracts domain owns these reads.

    contract(session, contract_id)           the row (id, customer_id, customer, starts_at,
                                             ends_at), or None
    revisions(session, contract_id, as_of=)  (revision, effective_at, terms) rows created by
                                             `as_of`, in revision order
    boundaries(session, before=[, customer_id=])  (customer_id, at): every instant before `before`
                                             where a contract starts, ends, takes a revision
                                             or turns a contract year (the raw events'
                                             retention keeps the hours these cut)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.contracts.years import LAST_YEAR, anniversary

_CONTRACT = text(
    "SELECT k.id, k.customer_id, k.starts_at, k.ends_at, c.key AS customer "
    "FROM contracts k JOIN customers c ON c.id = k.customer_id WHERE k.id = :id"
)
_REVISIONS = text(
    "SELECT revision, effective_at, terms FROM contract_revisions WHERE contract_id = :id "
    "AND created_at <= :as_of ORDER BY revision"
)


async def contract(session: AsyncSession, contract_id: str) -> Any | None:
    return (await session.execute(_CONTRACT, {"id": contract_id})).one_or_none()


async def revisions(session: AsyncSession, contract_id: str, *, as_of: datetime) -> Sequence[Any]:
    return (await session.execute(_REVISIONS, {"id": contract_id, "as_of": as_of})).all()


_ONE = "(CAST(:c AS bigint) IS NULL OR customer_id = :c)"
_BOUNDS = text(
    "SELECT customer_id, starts_at AS at, ends_at, true AS term FROM contracts "
    f"WHERE starts_at < :before AND {_ONE} UNION ALL SELECT customer_id, effective_at, NULL, "
    f"false FROM contract_revisions WHERE effective_at < :before AND {_ONE}"
)


async def boundaries(
    session: AsyncSession, *, before: datetime, customer_id: int | None = None
) -> list[tuple[int, datetime]]:
    """Every contract's start, end, revisions and anniversaries before `before`, with its
    customer (billing cuts a month at each: billing/data.py); one customer's, given one."""
    found: list[tuple[int, datetime]] = []
    params = {"before": before, "c": customer_id}
    for row in (await session.execute(_BOUNDS, params)).all():
        found.append((row.customer_id, row.at))
        if not row.term:
            continue
        last = min(before, row.ends_at or before)
        if row.ends_at is not None and row.ends_at < before:
            found.append((row.customer_id, row.ends_at))
        for years in range(1, min(last.year, LAST_YEAR) - row.at.year + 1):
            turn = anniversary(row.at, years)
            if turn >= last:
                break
            found.append((row.customer_id, turn))
    return found
