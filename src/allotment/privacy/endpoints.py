"""POST /v1/customers/{key}/subjects/{subject}/erase (admin; docs/privacy.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from allotment.auth.principal import Principal
from allotment.deps import SessionDep, require
from allotment.kit.identifiers import CustomerKey, Subject
from allotment.privacy import service
from allotment.privacy.schemas import ErasureRead

router = APIRouter(tags=["privacy"])

Admin = Annotated[Principal, require()]


# `:path`, as the seat's release: a subject may hold "/" (docs/seats.md).
@router.post("/v1/customers/{key}/subjects/{subject:path}/erase", response_model=ErasureRead)
async def erase_subject(
    key: CustomerKey, subject: Subject, principal: Admin, session: SessionDep
) -> ErasureRead:
    """Release the subject's seats and sessions and replace its identifier by its
    pseudonym everywhere it is kept. Idempotent; audited by pseudonym."""
    return await service.erase(session, customer_key=key, subject=subject, actor=principal.actor)
