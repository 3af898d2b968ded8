"""A contract as billing reads it (billing/data.py): the contract row with its customer's
key, and its revisions as recorded by an instant. The contracts domain owns these reads.

    contract(session, contract_id)           the row (id, customer_id, customer, starts_at,
                                             ends_at), or None
    revisions(session, contract_id, as_of=)  (revision, effective_at, terms) rows created by
                                             `as_of`, in revision order
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

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
