"""Contracts: record, read, list, amend (If-Match), list revisions, terminate, convert a trial."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from allotment.auth.principal import Principal
from allotment.contracts import amend as amendments
from allotment.contracts import convert as conversions
from allotment.contracts import service as contracts
from allotment.contracts.reads import ContractRead, RevisionRead
from allotment.contracts.schemas import (
    ContractAmend,
    ContractConvert,
    ContractCreate,
    ContractTerminate,
)
from allotment.deps import SessionDep, require
from allotment.kit.etag import parse_if_match, set_etag
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.identifiers import CustomerKey
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead

router = APIRouter(tags=["contracts"])

Admin = Annotated[Principal, require()]
CustomerReader = Annotated[Principal, require("finance", "check", customer_param="key")]
Reader = Annotated[Principal, require("finance", "check")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
IfMatch = Annotated[str | None, Header()]


@router.post("/v1/customers/{key}/contracts", status_code=201, response_model=ContractRead)
async def create_contract(
    key: CustomerKey,
    body: ContractCreate,
    principal: Admin,
    session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    view = await contracts.create(session, customer_key=key, data=body, actor=principal.actor)
    response = await idempotency.respond(view.read(), status=201)
    set_etag(response, view.contract.revision)
    return response


@router.get("/v1/customers/{key}/contracts", response_model=PageRead[ContractRead])
async def list_contracts(
    key: CustomerKey,
    principal: CustomerReader,
    session: SessionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> PageRead[ContractRead]:
    page = await contracts.list_for_customer(session, customer_key=key, limit=limit, cursor=cursor)
    return PageRead(items=[v.read() for v in page.items], next_cursor=page.next_cursor)


@router.get("/v1/contracts/{contract_id}", response_model=ContractRead)
async def get_contract(
    contract_id: str, principal: Reader, session: SessionDep, response: Response
) -> ContractRead:
    view = await contracts.get(session, contract_id)
    set_etag(response, view.contract.revision)
    return view.read()


@router.patch("/v1/contracts/{contract_id}", response_model=ContractRead)
async def amend_contract(
    contract_id: str,
    body: ContractAmend,
    principal: Admin,
    session: SessionDep,
    response: Response,
    if_match: IfMatch = None,
) -> ContractRead:
    view = await amendments.amend(
        session,
        contract_id=contract_id,
        data=body,
        if_match=parse_if_match(if_match),
        actor=principal.actor,
    )
    set_etag(response, view.contract.revision)
    return view.read()


@router.get("/v1/contracts/{contract_id}/revisions", response_model=PageRead[RevisionRead])
async def list_revisions(
    contract_id: str,
    principal: Reader,
    session: SessionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> PageRead[RevisionRead]:
    page = await contracts.list_revisions(
        session, contract_id=contract_id, limit=limit, cursor=cursor
    )
    return PageRead(
        items=[RevisionRead.model_validate(r, from_attributes=True) for r in page.items],
        next_cursor=page.next_cursor,
    )


@router.post("/v1/contracts/{contract_id}/terminate", response_model=ContractRead)
async def terminate_contract(
    contract_id: str,
    principal: Admin,
    session: SessionDep,
    idempotency: IdempotencyDep,
    body: ContractTerminate | None = None,
    if_match: IfMatch = None,
) -> Response:
    view = await amendments.terminate(
        session,
        contract_id=contract_id,
        at=body.at if body is not None else None,
        if_match=parse_if_match(if_match),
        actor=principal.actor,
    )
    response = await idempotency.respond(view.read(), status=200)
    set_etag(response, view.contract.revision)
    return response


@router.post(
    "/v1/contracts/{contract_id}/convert",
    response_model=ContractRead,
    responses={409: {"description": "Not a trial, terminated, or the new term overlaps."}},
)
async def convert_contract(
    contract_id: str,
    principal: Admin,
    session: SessionDep,
    idempotency: IdempotencyDep,
    body: ContractConvert | None = None,
    if_match: IfMatch = None,
) -> Response:
    view = await conversions.convert(
        session,
        contract_id=contract_id,
        data=body or ContractConvert(),
        if_match=parse_if_match(if_match),
        actor=principal.actor,
    )
    response = await idempotency.respond(view.read(), status=200)
    set_etag(response, view.contract.revision)
    return response
