"""Verifying an artifact offline: the token, the published key set, a clock — no service.

    verify(token, key_set, now=, fingerprint=) → Verified, or raises Invalid

Checks, in this order, each failure with its own reason (and `allotment artifact verify`'s
exit code):

    malformed        10  not a compact JWS; header or payload not JSON; `typ` not
                         allotment-entitlements+jwt; a claim missing or of the wrong type
    algorithm        11  `alg` is not EdDSA (`none` included)
    unknown_kid      12  no key of the set has the header's `kid`
    bad_signature    13  the signature does not verify under that key
    clock_behind     14  `iat` is more than the skew ahead of `now`: this clock is behind
    not_yet_valid    15  `nbf` is more than the skew ahead of `now`
    expired          16  `now` is more than the skew past `grace_until`
    wrong_machine    17  `fingerprint` was given and the artifact is bound to another
                         machine, or to none
    bad_key_set      18  the key set is not an RFC 7517 JWKS of Ed25519 keys

Past `exp` (beyond the skew) but not past `grace_until`, the artifact still verifies, with
the warning `grace_period` (exit 0). The skew is 5 minutes either way. Signatures are
checked by joserfc, with EdDSA as the only algorithm it may use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import OKPKey

from allotment.artifacts.schemas import ALG, CLOCK_SKEW_S, TYP
from allotment.signing.jose import REGISTRY

EXIT_CODES = {
    "malformed": 10,
    "algorithm": 11,
    "unknown_kid": 12,
    "bad_signature": 13,
    "clock_behind": 14,
    "not_yet_valid": 15,
    "expired": 16,
    "wrong_machine": 17,
    "bad_key_set": 18,
}
GRACE_PERIOD = "grace_period"
_TIMES = ("iat", "nbf", "exp", "grace_until")


class Invalid(Exception):
    """Why an artifact does not verify: `reason` (a key of EXIT_CODES) and a sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.reason]


@dataclass(frozen=True)
class Verified:
    header: dict[str, Any]
    claims: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())

    @property
    def kid(self) -> str:
        return str(self.header["kid"])

    @property
    def customer(self) -> str:
        return str(self.claims["sub"])

    def summary(self) -> str:
        """One line for people: who, with which key and policy, until when."""
        line = (
            f"valid: customer {self.customer}, kid {self.kid}, "
            f"policy version {self.claims.get('policy_version')}, "
            f"valid until {_text(self.claims['exp'])}"
        )
        bound = (self.claims.get("instance") or {}).get("fingerprint")
        if bound is not None:
            line += f", bound to {bound}"
        if GRACE_PERIOD in self.warnings:
            line += (
                f"; warning: {GRACE_PERIOD} (expired at {_text(self.claims['exp'])}, access "
                f"holds until {_text(self.claims['grace_until'])})"
            )
        return line


def _text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_set(document: str | bytes | dict[str, Any]) -> dict[str, OKPKey]:
    """The Ed25519 keys of a JWKS document, by kid."""
    try:
        parsed = json.loads(document) if isinstance(document, str | bytes) else document
        entries = parsed["keys"]
        if not isinstance(entries, list):
            raise TypeError("keys is not a list")
    except (ValueError, TypeError, KeyError) as exc:
        raise Invalid("bad_key_set", f"the key set is not a JWKS document ({exc})") from None
    keys: dict[str, OKPKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP":
            continue  # other key types never verify an artifact
        if entry.get("crv") != "Ed25519" or not isinstance(entry.get("kid"), str):
            continue
        try:
            keys[entry["kid"]] = OKPKey.import_key(entry)
        except (JoseError, ValueError, TypeError) as exc:
            raise Invalid("bad_key_set", f"key {entry['kid']!r} is not valid ({exc})") from None
    return keys


def verify(
    token: str | bytes,
    keys: str | bytes | dict[str, Any],
    *,
    now: datetime | None = None,
    fingerprint: str | None = None,
    skew: timedelta = timedelta(seconds=CLOCK_SKEW_S),
) -> Verified:
    """Verify `token` against `keys` (a JWKS document, as text or parsed, or what
    `key_set()` made of one) at `now`."""
    found = _resolve(keys)
    text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
    try:
        compact = jws.extract_compact(text.strip().encode("ascii"), registry=REGISTRY)
        header = compact.headers()
    except (JoseError, ValueError, TypeError, UnicodeError) as exc:
        raise Invalid("malformed", f"not a compact JWS ({_why(exc)})") from None
    if header.get("alg") != ALG:
        raise Invalid("algorithm", f"the algorithm is {header.get('alg')!r}, not {ALG}")
    if header.get("typ") != TYP:
        raise Invalid("malformed", f"typ is {header.get('typ')!r}, not {TYP}")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise Invalid("malformed", "the header names no kid")
    key = found.get(kid)
    if key is None:
        raise Invalid("unknown_kid", f"no key {kid!r} in the key set")
    try:
        jws.deserialize_compact(text.strip(), key, registry=REGISTRY)
    except BadSignatureError:
        raise Invalid("bad_signature", f"the signature does not verify under key {kid}") from None
    except JoseError as exc:  # a header joserfc refuses (`crit`, unknown parameters, …)
        raise Invalid("malformed", f"the header is not acceptable ({_why(exc)})") from None
    claims = _claims(compact.payload)
    return _in_time(header, claims, now or datetime.now(UTC), skew, fingerprint)


def _resolve(keys: str | bytes | dict[str, Any]) -> dict[str, OKPKey]:
    if isinstance(keys, dict) and all(isinstance(value, OKPKey) for value in keys.values()):
        return keys  # key_set()'s answer already
    return key_set(keys)


def _why(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError as exc:
        raise Invalid("malformed", f"the payload is not JSON ({exc})") from None
    if not isinstance(claims, dict):
        raise Invalid("malformed", "the payload is not a JSON object")
    for name in ("iss", "sub", "jti"):
        if not isinstance(claims.get(name), str):
            raise Invalid("malformed", f"the claim {name!r} is missing or not a string")
    for name in _TIMES:
        value = claims.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid("malformed", f"the claim {name!r} is missing or not a NumericDate")
    return claims


def _in_time(
    header: dict[str, Any],
    claims: dict[str, Any],
    now: datetime,
    skew: timedelta,
    fingerprint: str | None,
) -> Verified:
    at = now.timestamp()
    slack = skew.total_seconds()
    if claims["iat"] > at + slack:
        raise Invalid(
            "clock_behind",
            f"issued at {_text(claims['iat'])}, {int(claims['iat'] - at)} s ahead of this "
            f"clock (more than the {int(slack)} s skew): is this clock behind?",
        )
    if claims["nbf"] > at + slack:
        raise Invalid("not_yet_valid", f"not valid before {_text(claims['nbf'])}")
    if at > claims["grace_until"] + slack:
        raise Invalid(
            "expired",
            f"expired at {_text(claims['exp'])}"
            + (
                f" (grace until {_text(claims['grace_until'])})"
                if claims["grace_until"] > claims["exp"]
                else ""
            ),
        )
    warnings = (GRACE_PERIOD,) if at > claims["exp"] + slack else ()
    if fingerprint is not None:
        instance = claims.get("instance")
        bound = instance.get("fingerprint") if isinstance(instance, dict) else None
        if bound is None:
            raise Invalid("wrong_machine", "the artifact is bound to no machine")
        if bound != fingerprint:
            raise Invalid(
                "wrong_machine", f"the artifact is bound to {bound!r}, not {fingerprint!r}"
            )
    return Verified(header, claims, warnings)
