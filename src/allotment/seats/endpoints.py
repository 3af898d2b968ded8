"""Seats and sessions: assign, release and list named seats; open, renew, close sessions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from allotment.auth.principal import Principal
from allotment.deps import Require, SessionDep, require
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.identifiers import CustomerKey, Subject
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead
from allotment.seats import direct, sessions
from allotment.seats import service as seats
from allotment.seats.schemas import SeatAssign, SeatRead, SessionOpen, SessionRead

router = APIRouter(tags=["seats"])

# One guard object, shared by the routes and by seats/fastpath.py, so both enforce the same.
ASSIGN_GUARD = Require("check")
Backend = Annotated[Principal, Depends(ASSIGN_GUARD)]
Reader = Annotated[Principal, require("finance", "check", customer_param="key")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


@router.post(
    "/v1/customers/{key}/seats",
    status_code=201,
    response_model=SeatRead,
    responses={200: {"model": SeatRead, "description": "The subject already held this seat."}},
)
async def assign_seat(
    key: CustomerKey,
    body: SeatAssign,
    principal: Backend,
    session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    assignment = await direct.assign_any(
        session,
        customer_key=key,
        subject=body.subject,
        type=body.type,
        tenant=body.tenant,
        actor=principal.actor,
    )
    return await idempotency.respond(assignment.read(), status=201 if assignment.created else 200)


# `:path`: a subject may hold "/" (docs/seats.md), which arrives decoded even when sent as
# %2F, so the route takes the rest of the path as the subject.
@router.delete("/v1/customers/{key}/seats/{subject:path}", status_code=204)
async def release_seat(
    key: CustomerKey, subject: Subject, principal: Backend, session: SessionDep
) -> Response:
    await seats.release(session, customer_key=key, subject=subject, actor=principal.actor)
    return Response(status_code=204)


@router.get("/v1/customers/{key}/seats", response_model=PageRead[SeatRead])
async def list_seats(
    key: CustomerKey,
    principal: Reader,
    session: SessionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> PageRead[SeatRead]:
    page = await seats.list_seats(session, customer_key=key, limit=limit, cursor=cursor)
    return PageRead(
        items=[seats.read(row, key) for row in page.items], next_cursor=page.next_cursor
    )


@router.post("/v1/customers/{key}/sessions", status_code=201, response_model=SessionRead)
async def open_session(
    key: CustomerKey,
    body: SessionOpen,
    principal: Backend,
    session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    row = await sessions.open_session(
        session, customer_key=key, subject=body.subject, tenant=body.tenant, actor=principal.actor
    )
    return await idempotency.respond(sessions.read(row, key), status=201)


LEASE_GONE: dict[int | str, dict[str, Any]] = {
    410: {"description": "The session lapsed or was closed (`reason` says which)."}
}


@router.post(
    "/v1/sessions/{session_id}/heartbeat", response_model=SessionRead, responses=LEASE_GONE
)
async def renew_session(
    session_id: str, principal: Backend, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    row, customer = await sessions.heartbeat(session, session_id=session_id)
    return await idempotency.respond(sessions.read(row, customer))


@router.delete("/v1/sessions/{session_id}", status_code=204, responses=LEASE_GONE)
async def close_session(session_id: str, principal: Backend, session: SessionDep) -> Response:
    await sessions.close(session, session_id=session_id, actor=principal.actor)
    return Response(status_code=204)
