from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from allotment.artifacts import service
from allotment.artifacts.schemas import (
    COMPACT_JWS_PATTERN,
    MEDIA_TYPE,
    TTL_DEFAULT_S,
    TTL_MAX_S,
    TTL_MIN_S,
)
from allotment.auth.principal import CUSTOMER_KEY_PATTERN, Principal
from allotment.check.snapshot import StoreUnavailable
from allotment.deps import SessionDep, require
from allotment.errors import ServiceUnavailable
from allotment.kit.identifiers import Fingerprint

router = APIRouter(tags=["artifacts"])


class JoseResponse(Response):
    media_type = MEDIA_TYPE


@router.get(
    "/v1/customers/{key}/artifact",
    response_class=JoseResponse,
    responses={
        200: {
            "description": "A compact JWS (RFC 7515) signed with EdDSA: header `{alg, kid, "
            "typ: allotment-entitlements+jwt}`, payload the claims of docs/artifacts.md. "
            "Verify it against `/.well-known/jwks.json`.",
            "content": {MEDIA_TYPE: {"schema": {"type": "string", "pattern": COMPACT_JWS_PATTERN}}},
        },
        409: {"description": "The fingerprint holds no live instance lease"},
    },
)
async def artifact(
    # A key no customer can have is refused, as the entitlements route refuses it.
    key: Annotated[str, Path(pattern=CUSTOMER_KEY_PATTERN)],
    principal: Annotated[Principal, require("check", customer_param="key")],
    request: Request,
    session: SessionDep,
    ttl: Annotated[
        int,
        Query(
            ge=TTL_MIN_S,
            le=TTL_MAX_S,
            description="Seconds the artifact is valid: 3600 (1 h) to 2592000 (30 d).",
        ),
    ] = TTL_DEFAULT_S,
    fingerprint: Annotated[
        Fingerprint | None,
        Query(description="Bind the artifact to this live instance of the customer."),
    ] = None,
) -> Response:
    """The customer's entitlements as a signed artifact, for offline verification: every
    feature with access, reason and requirements, limits and meter use at issue time, the
    contract's term, optionally bound to one live instance. Audited."""
    state = request.app.state
    settings = state.settings
    try:
        issued = await service.issue(
            session,
            checker=state.checker,
            keyring=state.keyring,
            customer=key,
            ttl=timedelta(seconds=ttl),
            fingerprint=fingerprint,
            actor=principal.actor,
            issuer=settings.artifact_issuer,
            grace=timedelta(seconds=settings.artifact_grace_s),
            hot_pool=state.hot_pool,
            hot_wait_s=settings.db_hot_wait_s,
        )
    except StoreUnavailable as exc:
        raise ServiceUnavailable("The store is unavailable and nothing is cached.") from exc
    return JoseResponse(issued.token, headers={"Cache-Control": "no-store"})
