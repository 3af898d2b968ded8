"""Concurrent (floating) seats: sessions are leases on the seat pool.

For a plan with `seats.model: concurrent`, the cap counts live sessions: open, not closed,
and `expires_at` still ahead. A session that is not renewed stops counting at its expiry,
before the reaper ends its row (`kit/leases.py`), so capacity never waits on the worker.
Opening takes the pool lock (`contracts.pools.lock`); renewing and closing never add
capacity and are single conditional UPDATEs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.contracts import pools
from allotment.db import after_commit
from allotment.errors import NotFound
from allotment.kit import leases
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.ids import new_id
from allotment.kit.metrics import ALLOCATIONS
from allotment.kit.reads import from_row
from allotment.privacy import pseudonyms
from allotment.seats.filled import announce_pool_full
from allotment.seats.schemas import SessionRead
from allotment.seats.service import WrongSeatModel
from allotment.usage import lifecycle

COLUMNS = "id, customer_id, subject, tenant, ttl_s, opened_at, expires_at, ended_at, end_reason"
TABLE = leases.LeaseTable(
    table="seat_sessions", expiry="expires_at", ended_by_caller="closed", columns=COLUMNS
)
_LIVE = text(
    "SELECT count(*) AS live, min(expires_at) AS frees_at, "
    "count(*) FILTER (WHERE tenant = :tenant) AS in_tenant, "
    "min(expires_at) FILTER (WHERE tenant = :tenant) AS tenant_frees_at "
    "FROM seat_sessions WHERE customer_id = :c AND ended_at IS NULL AND expires_at > :now"
)
_INSERT = text(
    "INSERT INTO seat_sessions (id, customer_id, subject, tenant, ttl_s, opened_at, expires_at) "
    f"VALUES (:id, :c, :s, :tenant, :ttl, :now, :expires) RETURNING {COLUMNS}"
)


_LIVE_ROWS = text(
    f"SELECT {COLUMNS} FROM seat_sessions WHERE customer_id = :c AND ended_at IS NULL "
    "AND expires_at > :now ORDER BY opened_at, id LIMIT :limit"
)


async def live_sessions(
    session: AsyncSession, *, customer_id: int, now: datetime, limit: int
) -> list[Any]:
    """The oldest `limit` live sessions, the ones a concurrent pool counts as held (the
    portal's Seats page, docs/portal.md)."""
    result = await session.execute(_LIVE_ROWS, {"c": customer_id, "now": now, "limit": limit})
    return list(result.all())


class SessionNotFound(NotFound):
    type = "session-not-found"


def read(row: Any, customer: str) -> SessionRead:
    return from_row(SessionRead, row, customer=customer)


def audit_view(row: Any, subject_ref: str | None) -> dict[str, Any]:
    """The session as its audit record and lifecycle event show it: the subject's pseudonym
    (docs/privacy.md)."""
    return {
        "id": row.id,
        "subject": subject_ref,
        "tenant": row.tenant,
        "opened_at": isoformat(row.opened_at),
        "expires_at": isoformat(row.expires_at),
        "ended_at": None if row.ended_at is None else isoformat(row.ended_at),
        "end_reason": row.end_reason,
    }


async def open_session(
    session: AsyncSession,
    *,
    customer_key: str,
    subject: str,
    tenant: str | None,
    actor: str,
    now: datetime | None = None,
) -> Any:
    found = await pools.lock(session, customer_key=customer_key, at=now)
    now = found.at
    seats = found.seats()
    if seats.model != "concurrent" or seats.session_ttl is None:
        raise WrongSeatModel(
            "This plan assigns named seats: assign one with "
            f"POST /v1/customers/{customer_key}/seats instead of opening a session."
        )
    c = found.customer_id
    live = (await session.execute(_LIVE, {"c": c, "tenant": tenant, "now": now})).one()
    if tenant is not None:
        quotas = await pools.tenant_quotas(session, customer_id=c, tenant=tenant)
        if quotas.seats is not None:
            pools.refuse_tenant(
                tenant=tenant,
                pool="seats",
                quota=quotas.seats,
                held=live.in_tenant,
                wanted=1,
                frees_at=live.tenant_frees_at,
            )
    if live.live >= seats.limit:
        raise pools.PoolFull(
            f"All {seats.limit} concurrent seats are in use; one frees when a session closes "
            "or lapses.",
            reason="seat_limit_reached",
            pool="seats",
            limit=seats.limit,
            held=live.live,
            frees_at=live.frees_at,
        )
    ttl = seats.session_ttl
    row = (
        await session.execute(
            _INSERT,
            {
                "id": new_id("ses"),
                "c": c,
                "s": subject,
                "tenant": tenant,
                "ttl": int(ttl.total_seconds()),
                "now": now,
                "expires": now + ttl,
            },
        )
    ).one()
    lifecycle.record(
        session,
        customer_id=c,
        actor=actor,
        action="session.opened",
        target_type="session",
        target_key=f"{customer_key}/{row.id}",
        after=audit_view(row, pseudonyms.of_session(session).of(customer_key, subject)),
    )
    await invalidation.bump_customer(session, customer_id=c, customer_key=customer_key)
    after_commit(session, ALLOCATIONS.labels("sessions", "granted").inc)
    if live.live + 1 == seats.limit:  # this session took the last concurrent seat
        await announce_pool_full(
            session,
            customer_id=c,
            customer_key=customer_key,
            pool="sessions",
            limit=seats.limit,
            subject=subject,
            now=now,
        )
    return row


async def heartbeat(
    session: AsyncSession, *, session_id: str, now: datetime | None = None
) -> tuple[Any, str]:
    """Renew a live session's lease (`contracts.pools.renew_lease`)."""
    return await pools.renew_lease(session, TABLE, session_id, "session", now or utcnow())


async def close(
    session: AsyncSession, *, session_id: str, actor: str, now: datetime | None = None
) -> tuple[Any, str]:
    return await pools.end_lease(
        session, TABLE, session_id, "session", actor=actor, view=audit_view, now=now or utcnow()
    )


_LIVE_OF = text(
    "SELECT id FROM seat_sessions WHERE customer_id = :c AND subject = :s AND ended_at IS NULL "
    "ORDER BY id"
)
_ERASE = text(
    "UPDATE seat_sessions SET subject = :ref WHERE customer_id = :c AND subject = :s "
    "AND subject <> :ref"
)


async def erase_subject(
    session: AsyncSession,
    *,
    customer_id: int,
    customer_key: str,
    subject: str,
    ref: str,
    actor: str,
    now: datetime,
) -> tuple[int, int]:
    """An erasure (privacy/service.py): close `subject`'s live sessions (`session.closed`,
    audited), then keep its pseudonym `ref` in every session row instead (a lapsed one is
    left to the reaper, whose record shows `ref` too). Returns the sessions closed and the
    rows rewritten."""
    rows = (await session.execute(_LIVE_OF, {"c": customer_id, "s": subject})).scalars().all()
    closed = 0
    for session_id in rows:
        row = await leases.end(session, TABLE, session_id, now)
        if row is not None:
            closed += 1
            lifecycle.record(
                session,
                customer_id=customer_id,
                actor=actor,
                action="session.closed",
                target_type="session",
                target_key=f"{customer_key}/{row.id}",
                after=audit_view(row, ref),
            )
    result = await session.execute(_ERASE, {"c": customer_id, "s": subject, "ref": ref})
    return closed, int(result.rowcount or 0)  # type: ignore[attr-defined]
