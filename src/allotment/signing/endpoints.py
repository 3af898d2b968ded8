from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from allotment.deps import public
from allotment.kit.etag import none_match
from allotment.signing.schemas import JWKS_MEDIA_TYPE, key_set_schema

router = APIRouter(tags=["signing"])

CACHE_CONTROL = "public, max-age=300"


class KeySetResponse(Response):
    media_type = JWKS_MEDIA_TYPE


@router.get(
    "/.well-known/jwks.json",
    response_class=KeySetResponse,
    responses={
        200: {
            "description": "The key set",
            "content": {JWKS_MEDIA_TYPE: {"schema": key_set_schema()}},
            "headers": {
                "ETag": {"schema": {"type": "string"}},
                "Cache-Control": {"schema": {"type": "string"}},
            },
        },
        304: {"description": "Not modified: the `If-None-Match` tag is current"},
        503: {"description": "Service unavailable"},
    },
)
async def jwks(
    request: Request,
    _: Annotated[None, public()],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The public keys that verify signed artifacts (RFC 7517; OKP/Ed25519, RFC 8037), no
    key needed. Clients cache it (`Cache-Control`) and revalidate with `If-None-Match`."""
    body, etag = await request.app.state.keyring.jwks()
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if none_match(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return KeySetResponse(body, headers=headers)
