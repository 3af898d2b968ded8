"""The API's side of the portal: a one-time link for a customer (admin or finance)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Request

from allotment.auth.principal import Principal
from allotment.deps import SessionDep, SettingsDep, require
from allotment.kit.clock import utcnow
from allotment.kit.identifiers import CustomerKey
from allotment.portal import access
from allotment.portal.schemas import PortalLinkRead

router = APIRouter(tags=["portal"])

Staff = Annotated[Principal, require("finance")]


@router.post("/v1/customers/{key}/portal-sessions", status_code=201, response_model=PortalLinkRead)
async def open_portal_link(
    key: CustomerKey, request: Request, principal: Staff, session: SessionDep, settings: SettingsDep
) -> PortalLinkRead:
    """A one-time link into the customer's portal (docs/portal.md), valid for
    `ALLOTMENT_PORTAL_LINK_TTL_S`; opening it starts a browser session."""
    token, link = await access.open_link(
        session,
        customer_key=key,
        actor=principal.actor,
        ttl_s=settings.portal_link_ttl_s,
        now=utcnow(),
    )
    url = str(request.url_for("portal_login")) + "?" + urlencode({"token": token})
    return PortalLinkRead(url=url, expires_at=link.expires_at)
