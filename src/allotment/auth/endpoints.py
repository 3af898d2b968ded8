from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from allotment.auth import service as api_keys
from allotment.auth.cache import REVOKED_TOPIC
from allotment.auth.principal import Principal
from allotment.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from allotment.db import after_commit
from allotment.deps import SessionDep, require
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])

Admin = Annotated[Principal, require()]


@router.post("", status_code=201, response_model=ApiKeyCreated)
async def create_api_key(
    body: ApiKeyCreate, principal: Admin, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    key, secret = await api_keys.create(
        session, name=body.name, scopes=body.scopes, actor=principal.actor
    )
    created = ApiKeyCreated(**ApiKeyRead.model_validate(key).model_dump(), key=secret)
    return await idempotency.respond(created, status=201)


@router.get("", response_model=PageRead[ApiKeyRead])
async def list_api_keys(
    principal: Admin,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> PageRead[ApiKeyRead]:
    page = await api_keys.list_keys(session, limit=limit, cursor=cursor)
    return PageRead(
        items=[ApiKeyRead.model_validate(k) for k in page.items], next_cursor=page.next_cursor
    )


@router.delete("/{key_id}", status_code=204)
async def revoke_api_key(
    key_id: str, principal: Admin, session: SessionDep, request: Request
) -> Response:
    await api_keys.revoke(session, key_id=key_id, actor=principal.actor)
    bus = request.app.state.bus
    after_commit(session, lambda: bus.publish(REVOKED_TOPIC, key_id))
    return Response(status_code=204)
