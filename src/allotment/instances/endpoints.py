"""Instances: register, renew, deregister and list running copies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from allotment.auth.principal import Principal
from allotment.deps import SessionDep, require
from allotment.instances import service as instances
from allotment.instances.schemas import InstanceRead, InstanceRegister
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.identifiers import CustomerKey
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead

router = APIRouter(tags=["instances"])

Backend = Annotated[Principal, require("check")]
Reader = Annotated[Principal, require("finance", "check", customer_param="key")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


@router.post(
    "/v1/customers/{key}/instances",
    status_code=201,
    response_model=InstanceRead,
    responses={200: {"model": InstanceRead, "description": "A live fingerprint: lease renewed."}},
)
async def register_instance(
    key: CustomerKey,
    body: InstanceRegister,
    principal: Backend,
    session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    registration = await instances.register(
        session, customer_key=key, data=body, actor=principal.actor
    )
    return await idempotency.respond(
        registration.read(), status=201 if registration.created else 200
    )


LEASE_GONE: dict[int | str, dict[str, Any]] = {
    410: {"description": "The lease lapsed or the instance was deregistered."}
}


@router.post(
    "/v1/instances/{instance_id}/heartbeat", response_model=InstanceRead, responses=LEASE_GONE
)
async def renew_instance(
    instance_id: str, principal: Backend, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    row, customer = await instances.heartbeat(session, instance_id=instance_id)
    return await idempotency.respond(instances.read(row, customer))


@router.delete("/v1/instances/{instance_id}", status_code=204, responses=LEASE_GONE)
async def deregister_instance(
    instance_id: str, principal: Backend, session: SessionDep
) -> Response:
    await instances.deregister(session, instance_id=instance_id, actor=principal.actor)
    return Response(status_code=204)


@router.get("/v1/customers/{key}/instances", response_model=PageRead[InstanceRead])
async def list_instances(
    key: CustomerKey,
    principal: Reader,
    session: SessionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> PageRead[InstanceRead]:
    page = await instances.list_instances(session, customer_key=key, limit=limit, cursor=cursor)
    return PageRead(
        items=[instances.read(row, key) for row in page.items], next_cursor=page.next_cursor
    )
