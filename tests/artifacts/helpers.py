"""An artifact verifier written from `cryptography` alone (not the project's code, not
joserfc), tampering helpers, and the requests the artifact tests send."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Refused(Exception):
    pass


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def independent_verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The signature check any client can write: split, find the key by kid, Ed25519 over
    `header.payload`. Raises Refused or cryptography's InvalidSignature."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(b64d(header_b64))
    if header.get("alg") != "EdDSA":
        raise Refused(f"alg {header.get('alg')!r}")
    jwk = next((k for k in jwks["keys"] if k.get("kid") == header.get("kid")), None)
    if jwk is None or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise Refused(f"no Ed25519 key {header.get('kid')!r}")
    public = Ed25519PublicKey.from_public_bytes(b64d(jwk["x"]))
    public.verify(b64d(signature_b64), f"{header_b64}.{payload_b64}".encode())
    return json.loads(b64d(payload_b64))  # type: ignore[no-any-return]


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header_b64, payload_b64, signature_b64 = token.split(".")
    return json.loads(b64d(header_b64)), json.loads(b64d(payload_b64)), b64d(signature_b64)


def compose(header: dict[str, Any], payload: dict[str, Any] | bytes, signature: bytes) -> str:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"{b64e(json.dumps(header).encode())}.{b64e(body)}.{b64e(signature)}"


async def fetch(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    customer: str = "acme",
    **params: Any,
) -> httpx.Response:
    return await client.get(f"/v1/customers/{customer}/artifact", params=params, headers=headers)


async def artifact(
    client: httpx.AsyncClient, headers: dict[str, str], customer: str = "acme", **params: Any
) -> str:
    response = await fetch(client, headers, customer, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/jose"
    return response.text


async def jwks(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
