"""Leases kept in a table: renew, end and reap rows that live until an expiry column.

Sessions and instances are both leases: a row is live while `ended_at IS NULL` and its
expiry lies ahead; it stops counting at its expiry whether or not anyone has noticed yet.
Every statement here is one conditional UPDATE, so a renewal racing a reaper, a second
reaper, or a concurrent end cannot both win: whichever commits first changes the row, and
the other's WHERE no longer matches it.

    renew(session, table, id, now)   push the expiry to now + ttl_s, only if still live
    end(session, table, id, now)     end a live row now (a lapsed one is the reaper's)
    reap(session, table, now)        end every lapsed row at its expiry (SKIP LOCKED batches)
    find(session, table, id)         the row as it stands (to say why it could not be)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class LeaseTable:
    table: str
    expiry: str  # the column holding the lease's end
    ended_by_caller: str  # the end_reason of an explicit end: closed | deregistered
    columns: str  # what every statement returns

    def _sql(self, sql: str) -> Any:
        return text(sql.format(t=self.table, x=self.expiry, cols=self.columns))


def _returning(table: LeaseTable) -> str:
    return ", ".join(f"l.{c.strip()}" for c in table.columns.split(","))


async def renew(session: AsyncSession, table: LeaseTable, lease_id: str, now: datetime) -> Any:
    """The renewed row, or None when the lease is unknown, ended, or already lapsed."""
    stmt = table._sql(
        "UPDATE {t} SET {x} = :now + make_interval(secs => ttl_s) "
        "WHERE id = :id AND ended_at IS NULL AND {x} > :now RETURNING {cols}"
    )
    return (await session.execute(stmt, {"id": lease_id, "now": now})).one_or_none()


async def end(session: AsyncSession, table: LeaseTable, lease_id: str, now: datetime) -> Any:
    """End a live lease now (`ended_by_caller`). None when it is unknown, ended, or lapsed:
    a lapsed lease ended at its expiry whether or not the reaper has written that yet, so the
    caller answers 410 lease_expired either way (never a different answer by reaper timing)."""
    stmt = table._sql(
        "UPDATE {t} SET ended_at = :now, end_reason = :reason "
        "WHERE id = :id AND ended_at IS NULL AND {x} > :now RETURNING {cols}"
    )
    params = {"id": lease_id, "now": now, "reason": table.ended_by_caller}
    return (await session.execute(stmt, params)).one_or_none()


async def reap(
    session: AsyncSession, table: LeaseTable, now: datetime, *, batch: int = 500
) -> list[Any]:
    """End up to `batch` lapsed leases at their expiry; rows other reapers (or requests)
    hold locked are skipped, so replicas split the work instead of waiting on each other.
    Each returned row carries the customer's key as `customer_key`."""
    stmt = table._sql(
        "WITH lapsed AS (SELECT id FROM {t} WHERE ended_at IS NULL AND {x} <= :now "
        "ORDER BY {x} LIMIT :batch FOR UPDATE SKIP LOCKED) "
        "UPDATE {t} AS l SET ended_at = l.{x}, end_reason = 'expired' "
        "FROM lapsed, customers c WHERE l.id = lapsed.id AND c.id = l.customer_id "
        "RETURNING c.key AS customer_key, " + _returning(table)
    )
    return list((await session.execute(stmt, {"now": now, "batch": batch})).all())


async def find(session: AsyncSession, table: LeaseTable, lease_id: str) -> Any:
    stmt = table._sql("SELECT {cols} FROM {t} WHERE id = :id")
    return (await session.execute(stmt, {"id": lease_id})).one_or_none()
