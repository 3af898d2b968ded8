from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from allotment.auth.principal import Principal
from allotment.customers import service as customers
from allotment.customers.schemas import CustomerCreate, CustomerRead, CustomerUpdate
from allotment.deps import SessionDep, require
from allotment.kit.etag import parse_if_match, set_etag
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.identifiers import CustomerKey
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead

router = APIRouter(prefix="/v1/customers", tags=["customers"])

Admin = Annotated[Principal, require()]
Reader = Annotated[Principal, require("finance", "check", customer_param="key")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


@router.post("", status_code=201, response_model=CustomerRead)
async def create_customer(
    body: CustomerCreate, principal: Admin, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    customer = await customers.create(session, data=body, actor=principal.actor)
    return await idempotency.respond(CustomerRead.model_validate(customer), status=201)


@router.get("", response_model=PageRead[CustomerRead])
async def list_customers(
    principal: Annotated[Principal, require("finance")],
    session: SessionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> PageRead[CustomerRead]:
    page = await customers.list_customers(session, limit=limit, cursor=cursor)
    return PageRead(
        items=[CustomerRead.model_validate(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get("/{key}", response_model=CustomerRead)
async def get_customer(
    key: CustomerKey, principal: Reader, session: SessionDep, response: Response
) -> CustomerRead:
    customer = await customers.get(session, key)
    set_etag(response, customer.revision)
    return CustomerRead.model_validate(customer)


@router.patch("/{key}", response_model=CustomerRead)
async def update_customer(
    key: CustomerKey,
    body: CustomerUpdate,
    principal: Admin,
    session: SessionDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> CustomerRead:
    customer = await customers.update(
        session, key=key, data=body, if_match=parse_if_match(if_match), actor=principal.actor
    )
    set_etag(response, customer.revision)
    return CustomerRead.model_validate(customer)


@router.delete("/{key}", status_code=204)
async def delete_customer(
    key: CustomerKey,
    principal: Admin,
    session: SessionDep,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    await customers.delete(
        session, key=key, if_match=parse_if_match(if_match), actor=principal.actor
    )
    return Response(status_code=204)
