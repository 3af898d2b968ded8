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
from allotment.errors import ServiceUnavailable, ValidationFailed
from allotment.kit.identifiers import Fingerprint

router = APIRouter(tags=["artifacts"])


def _ttl(text: str | None) -> int:
    seconds = TTL_DEFAULT_S if text is None else int(text)
    if not TTL_MIN_S <= seconds <= TTL_MAX_S:
        raise ValidationFailed(
            "The request is not valid; see `errors` for each problem.",
            errors=[
                {
                    "path": "query.ttl",
                    "message": f"must be from {TTL_MIN_S} to {TTL_MAX_S} seconds, not {seconds}",
                }
            ],
        )
    return seconds


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
    # Digits only, read here: an int parameter's lax parsing would take "86400.0", "+3600",
    # " 3600", "3_600" and "03600" too.
    ttl: Annotated[
        str | None,
        Query(
            pattern=r"^[1-9][0-9]{0,9}$",
            description="Seconds the artifact is valid, in digits: 3600 (1 h) to 2592000 "
            "(30 d); default 86400.",
        ),
    ] = None,
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
            ttl=timedelta(seconds=_ttl(ttl)),
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
