"""Named seats: assign, release, list; and the burst window over a full pool.

A member seat counts against the contract's seat limit, a guest seat against the plan's
`guests`. When members fill the limit, up to `burst.extra` more may be assigned during
`burst.window`, counted from the first assignment over the limit (docs/policy.md): that episode
is a `seat_bursts` row. It ends when members fall back under the limit (a release, or an
amendment raising the limit: at once when it takes effect now, else at the first assignment
or release after it); until then, once its window has passed,
every member assignment is refused. Seats over the limit are billed per seat-day from the
seat rows and episodes.

Every assignment runs under the customer's row lock (`contracts.pools.lock`): counting the
live seats and inserting one is then a single step for every racing request, so no amount of
concurrency puts one seat past the limit, the burst ceiling or a tenant's quota. The lock
also makes opening and closing a burst episode race-free; the partial unique index on open
episodes is the second line of defence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Literal, NoReturn

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.contracts import pools
from allotment.contracts.models import Contract
from allotment.contracts.terms import SeatLimits, Terms, seat_limits
from allotment.db import after_commit
from allotment.errors import Conflict, NotFound
from allotment.kit.clock import isoformat
from allotment.kit.ids import new_id
from allotment.kit.metrics import ALLOCATIONS
from allotment.kit.pagination import Page, paginate
from allotment.policy.catalog import Catalog
from allotment.seats import known
from allotment.seats.models import Seat
from allotment.seats.schemas import BurstWindowRead, SeatRead
from allotment.usage import lifecycle

SeatType = Literal["member", "guest"]

_COLUMNS = "id, subject, type, tenant, over_limit, assigned_at, released_at"
_HELD = text(
    f"SELECT {_COLUMNS} FROM seats WHERE customer_id = :c AND subject = :s AND released_at IS NULL"
)
# Live seats are counted per customer in seat_counts (a trigger on seats keeps it, migration
# 0010); a tenant's, through the partial index of live tenant seats.
_COUNTS = text(
    "SELECT coalesce(n.members, 0) AS members, coalesce(n.guests, 0) AS guests, "
    "(SELECT count(*) FROM seats s WHERE s.customer_id = :c AND s.tenant = :tenant "
    "AND s.type = :type AND s.released_at IS NULL) AS in_tenant "
    "FROM (SELECT 1) AS one LEFT JOIN seat_counts n ON n.customer_id = :c"
)
_INSERT = text(
    "INSERT INTO seats (id, customer_id, subject, type, tenant, over_limit, assigned_at) "
    f"VALUES (:id, :c, :s, :type, :tenant, :over, :now) RETURNING {_COLUMNS}"
)
_RELEASE = text(
    "UPDATE seats SET released_at = :now WHERE customer_id = :c AND subject = :s "
    f"AND released_at IS NULL RETURNING {_COLUMNS}"
)
_MEMBERS = text("SELECT coalesce((SELECT members FROM seat_counts WHERE customer_id = :c), 0)")
_OPEN_BURST = text(
    'SELECT id, started_at, window_ends_at, "limit", extra FROM seat_bursts '
    "WHERE customer_id = :c AND ended_at IS NULL"
)
_START_BURST = text(
    'INSERT INTO seat_bursts (id, customer_id, "limit", extra, started_at, window_ends_at) '
    "VALUES (:id, :c, :limit, :extra, :now, :ends)"
)
_END_BURST = text(
    "UPDATE seat_bursts SET ended_at = :now WHERE customer_id = :c AND ended_at IS NULL "
    "RETURNING id, started_at"
)


class SeatNotFound(NotFound):
    type = "seat-not-found"


class SeatHeldDifferently(Conflict):
    type = "seat-held-differently"
    title = "Seat held differently"


class WrongSeatModel(Conflict):
    type = "wrong-seat-model"
    title = "Wrong seat model"


@dataclass(frozen=True)
class Assignment:
    seat: Any  # a row of _COLUMNS
    customer: str
    created: bool
    burst: BurstWindowRead | None = None
    # The canonical `after` of the seat.assigned audit record its caller must still append
    # in the same transaction (the keyed fast path: seats/fastpath.py).
    audit_after: str | None = None

    def read(self) -> SeatRead:
        return read(self.seat, self.customer, burst=self.burst)


def read(row: Any, customer: str, *, burst: BurstWindowRead | None = None) -> SeatRead:
    return SeatRead(
        id=row.id,
        customer=customer,
        subject=row.subject,
        type=row.type,
        tenant=row.tenant,
        since=row.assigned_at,
        over_limit=row.over_limit,
        burst=burst,
    )


def _audit_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "subject": row.subject,
        "type": row.type,
        "tenant": row.tenant,
        "over_limit": row.over_limit,
        "since": isoformat(row.assigned_at),
        "released_at": None if row.released_at is None else isoformat(row.released_at),
    }


def already_held(row: Any, customer: str, *, type: str, tenant: str | None) -> Assignment:
    """The seat `row` the subject already holds, when it is the kind asked for (200); a
    conflict when it is another type or tenant. Both assignment paths answer through here."""
    if row.type != type or row.tenant != tenant:
        raise SeatHeldDifferently(
            f"Subject {row.subject!r} already holds a {row.type} seat"
            + (f" in tenant '{row.tenant}'" if row.tenant else "")
            + "; release it before assigning another kind."
        )
    return Assignment(row, customer, created=False)


def refuse_guests(limit: int, held: int) -> NoReturn:
    raise pools.PoolFull(
        f"All {limit} guest seats are held; release one first.",
        reason="seat_limit_reached",
        pool="guests",
        limit=limit,
        held=held,
        frees_at=None,
    )


def refuse_members(
    seats: SeatLimits, held: int, window_end: datetime | None, *, closed: bool
) -> NoReturn:
    """seat_limit_reached for a member seat: the burst window closed (`closed`), no burst at
    all, or the pool and its burst seats full. Both assignment paths refuse through here."""
    refusal: dict[str, Any] = dict(
        reason="seat_limit_reached", pool="seats", limit=seats.limit, held=held, frees_at=None
    )
    if closed and window_end is not None:
        raise pools.PoolFull(
            f"The burst window closed at {isoformat(window_end)}; no seat is assigned until "
            f"fewer than {seats.limit} are held.",
            **refusal,
            burst={"ends_at": isoformat(window_end)},
        )
    if seats.burst_extra == 0 or seats.burst_window is None:
        raise pools.PoolFull(f"All {seats.limit} seats are held; release one first.", **refusal)
    raise pools.PoolFull(
        f"All {seats.limit} seats and the {seats.burst_extra} burst seats are held; "
        "release one first.",
        **refusal,
        burst=None if window_end is None else {"ends_at": isoformat(window_end)},
    )


def _record_assignment(
    session: AsyncSession, customer: str, customer_id: int, row: Any, actor: str
) -> None:
    lifecycle.record(
        session,
        customer_id=customer_id,
        actor=actor,
        action="seat.assigned",
        target_type="seat",
        target_key=f"{customer}/{row.subject}",
        after=_audit_view(row),
    )
    after_commit(session, partial(count_granted, row))


def count_granted(row: Any) -> None:
    ALLOCATIONS.labels("seats" if row.type == "member" else "guests", "granted").inc()


async def assign(
    session: AsyncSession,
    *,
    customer_key: str,
    subject: str,
    type: SeatType,
    tenant: str | None,
    actor: str,
    now: datetime | None = None,
) -> Assignment:
    """Give `subject` a seat, or return the one it holds (`created=False`)."""
    found = await pools.lock(session, customer_key=customer_key, at=now)
    now = found.at
    known.remember(customer_key, found)
    seats = found.seats()
    c = found.customer_id
    held = (await session.execute(_HELD, {"c": c, "s": subject})).one_or_none()
    if held is not None:
        return already_held(held, customer_key, type=type, tenant=tenant)
    if type == "member" and seats.model == "concurrent":
        raise WrongSeatModel(
            f"Plan '{found.limits.plan if found.limits else ''}' has concurrent (floating) seats: "
            f"open a session with POST /v1/customers/{customer_key}/sessions instead."
        )
    counts = (await session.execute(_COUNTS, {"c": c, "type": type, "tenant": tenant})).one()
    if tenant is not None:
        quotas = await pools.tenant_quotas(session, customer_id=c, tenant=tenant)
        if type == "member" and quotas.seats is not None:
            pools.refuse_tenant(
                tenant=tenant,
                pool="seats",
                quota=quotas.seats,
                held=counts.in_tenant,
                wanted=1,
                frees_at=None,
            )
    burst: BurstWindowRead | None = None
    if type == "guest":
        if counts.guests >= seats.guests:
            refuse_guests(seats.guests, counts.guests)
    else:
        burst = await _member_room(session, c, seats, counts.members, now)
    row = (
        await session.execute(
            _INSERT,
            {
                "id": new_id("seat"),
                "c": c,
                "s": subject,
                "type": type,
                "tenant": tenant,
                "over": burst is not None,
                "now": now,
            },
        )
    ).one()
    _record_assignment(session, customer_key, c, row, actor)
    await invalidation.bump_customer(session, customer_id=c, customer_key=customer_key)
    return Assignment(row, customer_key, created=True, burst=burst)


async def _member_room(
    session: AsyncSession, c: int, seats: SeatLimits, members: int, now: datetime
) -> BurstWindowRead | None:
    """None when a member seat fits under the limit; the burst it uses when it fits over the
    limit; raises seat_limit_reached when it fits nowhere."""
    episode = (await session.execute(_OPEN_BURST, {"c": c})).one_or_none()
    if members < seats.limit:
        if episode is not None:  # the limit was raised under an open episode: it is over
            await session.execute(_END_BURST, {"c": c, "now": now})
        return None
    window_end = None if episode is None else episode.window_ends_at
    if seats.burst_extra == 0 or seats.burst_window is None or members >= seats.ceiling:
        refuse_members(seats, members, window_end, closed=False)
    assert seats.burst_window is not None
    if episode is None:
        ends_at = now + seats.burst_window
        await session.execute(
            _START_BURST,
            {
                "id": new_id("burst"),
                "c": c,
                "limit": seats.limit,
                "extra": seats.burst_extra,
                "now": now,
                "ends": ends_at,
            },
        )
    elif now >= episode.window_ends_at:
        refuse_members(seats, members, episode.window_ends_at, closed=True)
    else:
        ends_at = episode.window_ends_at
    return BurstWindowRead(ends_at=ends_at, extra_left=seats.ceiling - members - 1)


async def release(
    session: AsyncSession,
    *,
    customer_key: str,
    subject: str,
    actor: str,
    now: datetime | None = None,
) -> Any:
    found = await pools.lock(session, customer_key=customer_key, at=now)
    now = found.at
    c = found.customer_id
    row = (await session.execute(_RELEASE, {"c": c, "s": subject, "now": now})).one_or_none()
    if row is None:
        raise SeatNotFound(f"Subject {subject!r} holds no seat of customer {customer_key!r}.")
    if row.type == "member":
        limits = found.limits.seats if found.limits is not None else None
        members = (await session.execute(_MEMBERS, {"c": c})).scalar_one()
        if limits is None or members < limits.limit:
            await session.execute(_END_BURST, {"c": c, "now": now})  # back under: over
    lifecycle.record(
        session,
        customer_id=c,
        actor=actor,
        action="seat.released",
        target_type="seat",
        target_key=f"{customer_key}/{subject}",
        after=_audit_view(row),
    )
    await invalidation.bump_customer(session, customer_id=c, customer_key=customer_key)
    after_commit(
        session, ALLOCATIONS.labels("seats" if row.type == "member" else "guests", "released").inc
    )
    return row


async def end_burst_under_new_limit(
    session: AsyncSession,
    contract: Contract,
    terms: Terms,
    catalog: Catalog,
    effective_at: datetime,
    now: datetime,
) -> None:
    """An amendment taking effect now that puts the members under the seat limit ends the
    open burst episode then. (One taking effect later leaves it to the first assignment or
    release after it: members may change until then.)"""
    plan = catalog.plans.get(terms.plan)
    pool = seat_limits(terms, plan) if plan is not None else None
    if pool is None or effective_at > now:
        return
    members = (await session.execute(_MEMBERS, {"c": contract.customer_id})).scalar_one()
    if members < pool.limit:
        await session.execute(_END_BURST, {"c": contract.customer_id, "now": effective_at})


async def list_seats(
    session: AsyncSession, *, customer_key: str, limit: int, cursor: str | None
) -> Page[Any]:
    c = await pools.customer_id(session, customer_key=customer_key)
    table = Seat.__table__
    query = select(*table.c).where(table.c.customer_id == c, table.c.released_at.is_(None))
    return await paginate(session, query, Seat.id, limit=limit, cursor=cursor, scalars=False)
