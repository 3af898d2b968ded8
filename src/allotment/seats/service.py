"""Named seats: release, list, the answers of an assignment; and the burst window over a
full pool. The assignment itself is one SQL function, the one implementation of its rules
(seats/direct.py, migration 0014); this module words its answers (`already_held`, the
refusals).

A member seat counts against the contract's seat limit, a guest seat against the plan's
`guests`. When members fill the limit, up to `burst.extra` more may be assigned during
`burst.window`, counted from the first assignment over the limit (docs/policy.md): that episode
is a `seat_bursts` row. It ends when members fall back under the limit (a release, or an
amendment raising the limit: at once when it takes effect now, else at the first assignment
or release after it); until then, once its window has passed,
every member assignment is refused. Seats over the limit are billed per seat-day from the
seat rows and episodes.

Every assignment runs under the customer's row lock (the pool lock, contracts/pools.py):
counting the live seats and inserting one is then a single step for every racing request, so
no amount of concurrency puts one seat past the limit, the burst ceiling or a tenant's
quota. The lock also makes opening and closing a burst episode race-free; the partial unique
index on open episodes is the second line of defence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NoReturn

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.contracts import pools
from allotment.contracts.limits import SeatLimits, seat_limits
from allotment.contracts.models import Contract
from allotment.contracts.terms import Terms
from allotment.db import after_commit
from allotment.errors import Conflict, NotFound
from allotment.instances import service as instances
from allotment.kit.clock import isoformat
from allotment.kit.metrics import ALLOCATIONS
from allotment.kit.pagination import Page, paginate
from allotment.kit.reads import from_row
from allotment.policy.catalog import Catalog
from allotment.privacy import pseudonyms
from allotment.seats.models import Seat
from allotment.seats.schemas import BurstWindowRead, SeatRead
from allotment.usage import lifecycle

SeatType = Literal["member", "guest"]

_COLUMNS = "id, subject, type, tenant, over_limit, assigned_at, released_at"
_RELEASE = text(
    "UPDATE seats SET released_at = :now WHERE customer_id = :c AND subject = :s "
    f"AND released_at IS NULL RETURNING {_COLUMNS}"
)
_MEMBERS = text("SELECT coalesce((SELECT members FROM seat_counts WHERE customer_id = :c), 0)")
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
class PoolFilled:
    """An assignment that took its pool's last seat: seats.limit_reached (seats/filled.py)."""

    customer_id: int
    pool: str  # members | guests
    limit: int


@dataclass(frozen=True)
class Assignment:
    seat: Any  # a row of _COLUMNS
    customer: str
    created: bool
    burst: BurstWindowRead | None = None
    # The canonical `after` of the seat.assigned audit record its caller must still append
    # in the same transaction (the keyed fast path: seats/fastpath.py).
    audit_after: str | None = None
    subject_ref: str | None = None  # the subject's pseudonym, the audit record's target
    filled: PoolFilled | None = None  # this assignment took the last seat of its pool

    def read(self) -> SeatRead:
        return read(self.seat, self.customer, burst=self.burst)


def read(row: Any, customer: str, *, burst: BurstWindowRead | None = None) -> SeatRead:
    return from_row(SeatRead, row, customer=customer, since=row.assigned_at, burst=burst)


def audit_view(row: Any, subject_ref: str) -> dict[str, Any]:
    """The seat as its audit record and lifecycle event show it: the subject's pseudonym,
    never the subject (docs/privacy.md; migration 0023 builds the same in SQL)."""
    return {
        "id": row.id,
        "subject": subject_ref,
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


def count_granted(row: Any) -> None:
    ALLOCATIONS.labels("seats" if row.type == "member" else "guests", "granted").inc()


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
    ref = pseudonyms.of_session(session).of(customer_key, subject)
    if row is None:
        raise SeatNotFound(f"Subject {subject!r} holds no seat of customer {customer_key!r}.")
    if row.type == "member":
        limits = found.limits.seats if found.limits is not None else None
        members = (await session.execute(_MEMBERS, {"c": c})).scalar_one()
        if limits is None or members < limits.limit:
            await session.execute(_END_BURST, {"c": c, "now": now})  # back under: over
    # The holder's devices go with the seat (docs/seats.md, "Devices per seat").
    await instances.end_devices(
        session, customer_id=c, customer_key=customer_key, subject=subject, actor=actor, now=now
    )
    lifecycle.record(
        session,
        customer_id=c,
        actor=actor,
        action="seat.released",
        target_type="seat",
        target_key=f"{customer_key}/{ref}",
        after=audit_view(row, ref),
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
    pool = seat_limits(terms, plan, addons=catalog.addons) if plan is not None else None
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


_ERASE = text(
    "UPDATE seats SET subject = :ref WHERE customer_id = :c AND subject = :s AND subject <> :ref"
)


async def erase_subject(session: AsyncSession, *, customer_id: int, subject: str, ref: str) -> int:
    """Past seats of `subject` keep its pseudonym `ref` instead (an erasure: privacy/service.py;
    the caller released the live one). Billing reads the intervals, never the subject."""
    result = await session.execute(_ERASE, {"c": customer_id, "s": subject, "ref": ref})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
