"""The published key set (RFC 7517) as the OpenAPI document describes it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JWKS_MEDIA_TYPE = "application/jwk-set+json"  # RFC 7517 §8.5


class PublicKey(BaseModel):
    """An Ed25519 public key as an RFC 8037 JWK."""

    model_config = ConfigDict(extra="allow")

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str = Field(description="The 32-byte public key, base64url without padding.")
    kid: str
    alg: Literal["EdDSA"]
    use: Literal["sig"]


class KeySet(BaseModel):
    """Every key that signs or may have signed a still-valid artifact: the next key, the
    active key, and retired keys until their last artifact's `grace_until`."""

    keys: list[PublicKey]


def key_set_schema() -> dict[str, Any]:
    """KeySet's JSON Schema with PublicKey inlined, for a response content the OpenAPI
    document declares by hand (its media type is not application/json)."""
    schema = KeySet.model_json_schema()
    definitions = schema.pop("$defs")
    schema["properties"]["keys"]["items"] = definitions["PublicKey"]
    return schema
