"""The artifact's format constants, shared by the issuer (service.py), the route
(endpoints.py) and the offline verifier (verify.py, which imports nothing else of the
service)."""

from __future__ import annotations

MEDIA_TYPE = "application/jose"  # RFC 7515 §9.2.1: a compact JWS
TYP = "allotment-entitlements+jwt"  # the header's `typ`
ALG = "EdDSA"

TTL_DEFAULT_S = 24 * 3600
TTL_MIN_S = 3600
TTL_MAX_S = 30 * 24 * 3600

CLOCK_SKEW_S = 300  # tolerated between the issuer's clock and the verifier's

COMPACT_JWS_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
