"""Named-seat assignment: one statement, `allotment_assign_seat` (migration 0014).

The database function is the one implementation of the assignment rules — the pool lock,
the held seat, the member limit and its burst window, the guests, the tenant quotas — and
writes the seat, the burst episode, the state-version bump, the audit record and the
lifecycle event. Python keeps no copy of those rules: it supplies the limits and words the
answers. Every assignment goes through `assign_direct`, with the limits from one of two
places:

* the limits this process remembered for the customer (`known.py`): seats/fastpath.py, on an
  autocommit connection of the hot pool, one round trip; and the route (`assign_known`), in
  its session, when the middleware handed the request on;
* the limits read under the pool lock (`assign`, the general path, which remembers them):
  a customer this process does not know yet, or whose remembered limits the function found
  stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from allotment import invalidation
from allotment.contracts import pools
from allotment.db import after_commit, driver
from allotment.kit import idempotency
from allotment.kit.clock import utcnow
from allotment.kit.ids import new_id
from allotment.kit.metrics import AUDIT_RECORDS
from allotment.privacy.pseudonyms import Pseudonyms, of_session
from allotment.seats import known
from allotment.seats.filled import announce_filled
from allotment.seats.known import KnownLimits
from allotment.seats.schemas import BurstWindowRead
from allotment.seats.service import (
    Assignment,
    PoolFilled,
    SeatType,
    WrongSeatModel,
    already_held,
    count_granted,
    refuse_guests,
    refuse_members,
)
from allotment.usage import partitions

_FAST = "SELECT * FROM allotment_assign_seat(" + ", ".join(["%s"] * 18) + ")"
_BEGIN_KEYED = "BEGIN; SELECT * FROM allotment_assign_seat_keyed(" + ", ".join(["%s"] * 19) + ")"


_APPEND = "SELECT allotment_audit_append(%s, 'seat.assigned', 'seat', %s, %s, %s)"


@dataclass(frozen=True)
class Keyed:
    """The request's Idempotency-Key, claimed by `allotment_assign_seat_keyed` (migrations
    0011 and 0014) in the statement that assigns, which `assign_direct` then sends after a BEGIN:
    the caller stores its response in that transaction and commits
    (`idempotency.store_and_commit`), or rolls it back."""

    principal: str
    key: str
    request_hash: str


@dataclass(frozen=True)
class _FastRow:
    """A seat row as `allotment_assign_seat` returns it, shaped like a row of _COLUMNS."""

    id: str
    subject: str
    type: str
    tenant: str | None
    over_limit: bool
    assigned_at: datetime
    released_at: datetime | None = None


async def assign_known(
    session: AsyncSession,
    *,
    customer_key: str,
    subject: str,
    type: SeatType,
    tenant: str | None,
    actor: str,
    now: datetime | None = None,
) -> Assignment | None:
    """`assign_direct` inside the session's transaction: the caching and metrics after its
    commit."""
    limits = known.get(customer_key)
    if limits is None:
        return None
    return await _in_session(
        session,
        limits,
        customer_key=customer_key,
        subject=subject,
        type=type,
        tenant=tenant,
        actor=actor,
        now=now,
    )


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
    """The general path: lock the customer's row, read the limits in force (and remember
    them for the fast path), then assign with them through the same statement, in the same
    transaction. Give `subject` a seat, or return the one it holds (`created=False`)."""
    for _ in range(3):
        found = await pools.lock(session, customer_key=customer_key, at=now)
        known.remember(customer_key, found)
        seats = found.seats()  # no contract in force, no seat pool: refused here
        assert found.contract_id is not None and found.revision is not None
        limits = KnownLimits(found.contract_id, found.revision, found.active_version, seats)
        assignment = await _in_session(
            session,
            limits,
            customer_key=customer_key,
            subject=subject,
            type=type,
            tenant=tenant,
            actor=actor,
            now=found.at,
        )
        if assignment is not None:
            return assignment
        # Stale already: a policy publish committed between the read and the statement (it
        # takes no customer lock). Read again, under the lock this transaction still holds.
    raise RuntimeError(f"the limits of {customer_key!r} read under the pool lock stay stale")


async def _in_session(
    session: AsyncSession,
    limits: KnownLimits,
    *,
    customer_key: str,
    subject: str,
    type: SeatType,
    tenant: str | None,
    actor: str,
    now: datetime | None,
) -> Assignment | None:
    assignment = await assign_direct(
        await driver(session),
        session.bind,  # type: ignore[arg-type]
        limits=limits,
        customer_key=customer_key,
        subject=subject,
        type=type,
        tenant=tenant,
        actor=actor,
        request_id=session.info.get("request_id"),
        now=now,
        pseudonyms=of_session(session),
    )
    if assignment is not None and assignment.created:
        after_commit(session, partial(count_direct, assignment))
        invalidation.customer_changed(session, customer_key=customer_key)
        if assignment.filled is not None:
            await announce_filled(session, assignment, now=assignment.seat.assigned_at)
    return assignment


def count_direct(assignment: Assignment) -> None:
    """The metrics of a committed `assign_direct` assignment (its audit record included)."""
    AUDIT_RECORDS.inc()
    count_granted(assignment.seat)


async def assign_direct(
    pg: Any,
    engine: AsyncEngine,
    *,
    limits: KnownLimits | None = None,
    customer_key: str,
    subject: str,
    type: SeatType,
    tenant: str | None,
    actor: str,
    request_id: str | None,
    now: datetime | None = None,
    keyed: Keyed | None = None,
    pseudonyms: Pseudonyms,
) -> Assignment | None:
    """The assignment in one statement (`allotment_assign_seat`, migration 0014) on the
    psycopg connection `pg`, with `limits` (by default those this process last read for the
    customer); None when there are none, or the database says they are no longer those in
    force (they are forgotten): then `assign` reads them and decides. The function writes
    the audit record and the lifecycle event itself: on an autocommit connection
    (seats/fastpath.py) the whole assignment is one round trip. The caller publishes the
    change and counts it (`count_direct`) once it is committed. With `keyed`, the key is
    claimed first: raises IdempotentReplay (the stored answer), or the in-flight /
    reused-key problems, as kit/idempotency.py does."""
    limits = limits or known.get(customer_key)
    if limits is None:
        return None
    seats = limits.seats
    # The function writes the lifecycle event: its month's partition must exist.
    await partitions.ensure(engine, (now or utcnow(),))
    window = seats.burst_window if seats.burst_extra else None
    # The audit record and the lifecycle event name the subject by pseudonym (0023).
    subject_ref = pseudonyms.of(customer_key, subject)
    params = (
        customer_key,
        subject,
        type,
        tenant,
        now,
        limits.contract_id,
        limits.revision,
        limits.active_version,
        seats.limit if seats.model == "named" else None,  # concurrent: no member seats
        seats.burst_extra,
        window,
        seats.guests,
        new_id("seat"),
        new_id("burst"),
        actor,
        request_id,
        new_id("evt"),
        subject_ref,
    )
    if keyed is None:
        cursor = await pg.execute(_FAST, params)
    else:
        # BEGIN and the statement in one round trip (bound client-side, so one query may
        # hold both); the caller appends the audit record, stores its answer and commits,
        # or rolls back. (Without actor and request id: the caller's append has them.)
        cursor = psycopg.AsyncClientCursor(pg)
        claim = (keyed.principal, keyed.key, keyed.request_hash)
        await cursor.execute(_BEGIN_KEYED, (*claim, *params[:14], *params[16:]))
        cursor.nextset()
    found = await cursor.fetchone()
    status = found[0]
    customer = customer_key
    if status == "in_flight":
        raise idempotency.in_flight()
    if status == "reused":
        raise idempotency.reused()
    if status == "replay":
        raise idempotency.IdempotentReplay(found[12], bytes(found[13]))
    if status == "stale":
        known.forget(customer_key)
    if status in ("stale", "no_customer"):
        return None
    _, _customer_id, seat_id, seat_type, seat_tenant, over, assigned_at = found[:7]
    held, quota, window_end, extra_left = found[7:11]
    row = _FastRow(seat_id, subject, seat_type, seat_tenant, over, assigned_at)
    if status == "held":
        return already_held(row, customer, type=type, tenant=tenant)
    if status == "wrong_model":
        raise WrongSeatModel(
            f"The plan of customer {customer!r} has concurrent (floating) seats: open a "
            f"session with POST /v1/customers/{customer}/sessions instead."
        )
    if status == "unknown_tenant":
        raise pools.unknown_tenant(tenant or "")
    if status == "tenant_full":
        pools.refuse_tenant(
            tenant=tenant or "", pool="seats", quota=quota, held=held, wanted=1, frees_at=None
        )
    if status == "guests_full":
        refuse_guests(quota, held)
    if status in ("full", "burst_closed"):
        refuse_members(seats, held, window_end, closed=status == "burst_closed")
    burst = BurstWindowRead(ends_at=window_end, extra_left=extra_left) if over else None
    audit_after = found[11] if keyed is not None else None
    return Assignment(
        row,
        customer,
        created=True,
        burst=burst,
        audit_after=audit_after,
        subject_ref=subject_ref,
        filled=filled(_customer_id, seat_type, held, seats),
    )


def filled(customer_id: int, seat_type: str, held: int | None, seats: Any) -> PoolFilled | None:
    """Whether a created seat took its pool's last one: the function returns the seats its
    pool holds with it (migration 0025). A seat over the limit (a burst) is past that point."""
    limit = seats.guests if seat_type == "guest" else seats.limit
    if held is None or held != limit:
        return None
    return PoolFilled(customer_id, "guests" if seat_type == "guest" else "members", limit)


def audit_append(
    assignment: Assignment, actor: str, request_id: str | None
) -> tuple[str, tuple[Any, ...]] | None:
    """The statement (and its parameters) that appends the audit record a keyed assignment
    left to its caller: sent with the COMMIT, so the chain lock it takes is held for no round
    trip to this worker. None when there is nothing to append."""
    if assignment.audit_after is None:
        return None
    target = f"{assignment.customer}/{assignment.subject_ref}"
    return _APPEND, (actor, target, assignment.audit_after, request_id)


async def assign_any(
    session: AsyncSession,
    *,
    customer_key: str,
    subject: str,
    type: SeatType,
    tenant: str | None,
    actor: str,
    now: datetime | None = None,
) -> Assignment:
    """Assign as the API does: the one-round-trip path when this process knows the
    customer's limits and they still hold, else the general one."""
    fields: dict[str, Any] = dict(
        customer_key=customer_key, subject=subject, type=type, tenant=tenant, actor=actor, now=now
    )
    return await assign_known(session, **fields) or await assign(session, **fields)
