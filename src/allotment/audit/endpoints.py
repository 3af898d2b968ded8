from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from allotment.audit import service as audit
from allotment.audit.schemas import AuditRecordRead, AuditVerification
from allotment.auth.principal import Principal
from allotment.deps import SessionDep, require
from allotment.kit.clock import QueryMoment
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead

router = APIRouter(prefix="/v1/audit", tags=["audit"])

Finance = Annotated[Principal, require("finance")]


@router.get("", response_model=PageRead[AuditRecordRead])
async def list_audit(
    principal: Finance,
    session: SessionDep,
    target: Annotated[
        str | None, Query(description="`type:key` (e.g. `customer:acme`) or just a key")
    ] = None,
    actor: str | None = None,
    action: str | None = None,
    since: QueryMoment | None = None,
    until: QueryMoment | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> PageRead[AuditRecordRead]:
    target_type = target_key = None
    if target:
        target_type, sep, target_key = target.partition(":")
        if not sep:
            target_type, target_key = None, target
    page = await audit.list_records(
        session,
        target_type=target_type,
        target_key=target_key,
        actor=actor,
        action=action,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    return PageRead(
        items=[AuditRecordRead.model_validate(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.get("/verify", response_model=AuditVerification)
async def verify_audit(principal: Finance, session: SessionDep) -> AuditVerification:
    return await audit.verify(session)
