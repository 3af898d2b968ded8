"""Tenants of a customer: create, list, read, update quotas, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from allotment.auth.principal import Principal
from allotment.deps import SessionDep, require
from allotment.kit.etag import parse_if_match, set_etag
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.identifiers import CustomerKey, TenantKey
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead
from allotment.tenants import service as tenants
from allotment.tenants.schemas import TenantCreate, TenantRead, TenantUpdate

router = APIRouter(prefix="/v1/customers/{key}/tenants", tags=["tenants"])

Admin = Annotated[Principal, require()]
Reader = Annotated[Principal, require("finance", "check", customer_param="key")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
IfMatch = Annotated[str | None, Header()]


@router.post("", status_code=201, response_model=TenantRead)
async def create_tenant(
    key: CustomerKey,
    body: TenantCreate,
    principal: Admin,
    session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    view = await tenants.create(session, customer_key=key, data=body, actor=principal.actor)
    response = await idempotency.respond(view.read(), status=201)
    set_etag(response, view.tenant.revision)
    return response


@router.get("", response_model=PageRead[TenantRead])
async def list_tenants(
    key: CustomerKey,
    principal: Reader,
    session: SessionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> PageRead[TenantRead]:
    page = await tenants.list_tenants(session, customer_key=key, limit=limit, cursor=cursor)
    return PageRead(items=[v.read() for v in page.items], next_cursor=page.next_cursor)


@router.get("/{tenant}", response_model=TenantRead)
async def get_tenant(
    key: CustomerKey, tenant: TenantKey, principal: Reader, session: SessionDep, response: Response
) -> TenantRead:
    view = await tenants.get(session, customer_key=key, tenant_key=tenant)
    set_etag(response, view.tenant.revision)
    return view.read()


@router.patch("/{tenant}", response_model=TenantRead)
async def update_tenant(
    key: CustomerKey,
    tenant: TenantKey,
    body: TenantUpdate,
    principal: Admin,
    session: SessionDep,
    response: Response,
    if_match: IfMatch = None,
) -> TenantRead:
    view = await tenants.update(
        session,
        customer_key=key,
        tenant_key=tenant,
        data=body,
        if_match=parse_if_match(if_match),
        actor=principal.actor,
    )
    set_etag(response, view.tenant.revision)
    return view.read()


@router.delete("/{tenant}", status_code=204)
async def delete_tenant(
    key: CustomerKey,
    tenant: TenantKey,
    principal: Admin,
    session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    await tenants.delete(
        session,
        customer_key=key,
        tenant_key=tenant,
        if_match=parse_if_match(if_match),
        actor=principal.actor,
    )
    return Response(status_code=204)
