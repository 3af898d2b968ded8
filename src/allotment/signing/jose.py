"""The JOSE pieces of the signing keys, all through joserfc: Ed25519 keys as RFC 8037 JWKs,
and compact JWS signatures with `alg: EdDSA`.

RFC 9864 deprecates the polymorphic `EdDSA` in favour of `Ed25519`; the artifacts still say
`EdDSA`, which every JOSE library verifies today, so joserfc's warning about it is silenced
here, for that algorithm only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import OKPKey

ALG = "EdDSA"
USE = "sig"

warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)


class Registry(jws.JWSRegistry):
    """EdDSA only, and room for a large catalog's entitlements in one payload."""

    max_payload_length = 4 * 1024 * 1024


REGISTRY = Registry(algorithms=[ALG])


def _raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def generate(kid: str) -> tuple[dict[str, Any], bytes]:
    """A new Ed25519 key: its public JWK (with kid, alg, use) and its raw 32-byte private half."""
    private = Ed25519PrivateKey.generate()
    key = OKPKey.import_key(private, parameters={"kid": kid, "alg": ALG, "use": USE})
    return dict(key.as_dict(private=False)), _raw_private(private)


@dataclass(frozen=True)
class Signer:
    """One key's private half, ready to sign (decrypted once per process)."""

    kid: str
    key: OKPKey

    @classmethod
    def from_raw(cls, kid: str, raw: bytes) -> Signer:
        private = Ed25519PrivateKey.from_private_bytes(raw)
        return cls(kid, OKPKey.import_key(private, parameters={"kid": kid, "alg": ALG}))

    def sign(self, payload: bytes, *, typ: str) -> str:
        """A compact JWS of `payload`: header {alg: EdDSA, kid, typ}."""
        header = {"alg": ALG, "kid": self.kid, "typ": typ}
        return jws.serialize_compact(header, payload, self.key, registry=REGISTRY)
