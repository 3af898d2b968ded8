"""Erasing a subject (docs/privacy.md): `erase(session, customer_key=, subject=, actor=)`.

Under the customer's pool lock: the subject's live devices are ended, its live seat
released and its live sessions closed, each audited as usual; then every
row that still holds the raw identifier — past seats, sessions and devices, and records from
before pseudonyms (decision log, lifecycle events) — holds its pseudonym instead, and the
stored Idempotency-Key responses that name it are dropped. The erasure itself is audited by
pseudonym (`subject.erased`). The answer counts exactly the rows rewritten, by kind, and says
whether anything held the subject at all (`found`): a subject is an exact, case-sensitive
string, and erasing by its pseudonym rewrites nothing. Seats' intervals, counters and the
audit chain are untouched, so invoices, usage totals and `GET /v1/audit/verify` read exactly
as before. Running it again finds nothing more to do.

Above the domains it changes: each owner erases its own rows (`erase_subject`).
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.check import decisions
from allotment.contracts import pools
from allotment.instances import service as instances
from allotment.kit import idempotency
from allotment.privacy import pseudonyms
from allotment.privacy.schemas import ErasureRead, Pseudonymized
from allotment.seats import service as seats
from allotment.seats import sessions
from allotment.usage import lifecycle


async def erase(
    session: AsyncSession,
    *,
    customer_key: str,
    subject: str,
    actor: str,
    now: datetime | None = None,
) -> ErasureRead:
    found = await pools.lock(session, customer_key=customer_key, at=now)  # 404: no customer
    now, c = found.at, found.customer_id
    ref = pseudonyms.of_session(session).of(customer_key, subject)
    live = dict(customer_key=customer_key, subject=subject, ref=ref, actor=actor, now=now)
    # Devices first (`instance.seat_released`, as the seat's release would end them), so
    # the count says how many ended.
    ended, devices = await instances.erase_subject(session, customer_id=c, **live)  # type: ignore[arg-type]
    released = 0
    with contextlib.suppress(seats.SeatNotFound):
        await seats.release(
            session, customer_key=customer_key, subject=subject, actor=actor, now=now
        )
        released = 1
    closed, held = await sessions.erase_subject(session, customer_id=c, **live)  # type: ignore[arg-type]
    rows = Pseudonymized(
        seats=await seats.erase_subject(session, customer_id=c, subject=subject, ref=ref),
        sessions=held,
        devices=devices,
        decision_records=await decisions.erase_subject(
            session, customer_key=customer_key, subject=subject, ref=ref
        ),
        events=await lifecycle.erase_subject(session, customer_id=c, subject=subject, ref=ref),
    )
    forgotten = await idempotency.forget_holding(session, subject)
    erasure = ErasureRead(
        customer=customer_key,
        subject_ref=ref,
        found=bool(released or closed or ended or rows.total or forgotten),
        seats_released=released,
        sessions_closed=closed,
        devices_ended=ended,
        rows_pseudonymized=rows.total,
        pseudonymized=rows,
        responses_forgotten=forgotten,
    )
    lifecycle.record(
        session,
        customer_id=c,
        actor=actor,
        action="subject.erased",
        target_type="subject",
        target_key=f"{customer_key}/{ref}",
        after=erasure.model_dump(),
    )
    # Caches drop the customer's snapshot (and its Redis copy, which lists live holders).
    await invalidation.bump_customer(session, customer_id=c, customer_key=customer_key)
    return erasure
