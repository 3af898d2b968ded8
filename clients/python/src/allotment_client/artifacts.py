"""Signed artifacts, verified offline: the published key set and `verify()` (docs/artifacts.md).

    KeySet.from_jwks(document)                     the Ed25519 keys of a JWKS, by kid
    verify(token, keys, *, now=, fingerprint=, rules=)  → Artifact, or raises ArtifactInvalid

The checks, in docs/artifacts.md's order, each failing with its reason: `malformed` (not a
compact JWS, header or payload not JSON, `typ` not allotment-entitlements+jwt, a claim
missing), `algorithm` (`alg` not EdDSA — the key set never chooses it), `unknown_kid`,
`bad_signature`, `clock_behind` (`iat` more than the 5 min skew ahead), `not_yet_valid`
(`nbf` likewise), `expired` (more than the skew past `grace_until`), `wrong_machine` (a
`fingerprint` was asked for and the artifact is bound to another machine or to none).
Past `exp` (+ skew) but not past `grace_until` (+ skew) it verifies, `in_grace`.

An `Artifact` also holds, computed once here, what `local.decide()` reads on every check:
a `FeatureEntry` per feature with the answer to a check naming nothing else, and what a
check naming a subject, instance, tenant or context needs from the service.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning
from joserfc.jwk import OKPKey

from allotment_client.errors import ArtifactInvalid
from allotment_client.models import Decision

ALG = "EdDSA"
TYP = "allotment-entitlements+jwt"
SKEW_S = 300

# The artifacts say `alg: EdDSA` (RFC 8037), which RFC 9864 deprecates for `Ed25519`; every
# JOSE library still verifies it. Silence joserfc's warning for that one algorithm only.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)


class _Registry(jws.JWSRegistry):
    max_payload_length = 4 * 1024 * 1024  # a large catalog's entitlements


REGISTRY = _Registry(algorithms=[ALG])

# Reasons decided before any rule or gate (docs/check.md, steps 1–6): they do not depend on
# the subject, instance, tenant or context a check names.
STATIC_DENIALS = frozenset(
    {
        "customer_unknown",
        "feature_unknown",
        "no_active_contract",
        "contract_not_started",
        "contract_expired",
        "trial_expired",
        "feature_not_in_plan",
        "dependency_missing",
    }
)
# Denials of the meter and credits gates (the entitlements document runs them): they follow
# the live counter and balance, which move after issue (a new period, a top-up), so such a
# feature is the service's to decide.
LIVE_DENIALS = frozenset({"usage_limit_reached", "credits_exhausted", "outage_default"})
# What a rule may read that the artifact's own decision (made without them) cannot know.
REQUEST_INPUTS = frozenset({"subject", "instance", "tenant", "context"})
LIVE_INPUTS = frozenset({"usage", "now"})  # meter use and the clock: only the service
_VARIABLE = re.compile(r"\b(subject|instance|tenant|context|usage|now)\b")
UNKNOWN_RULES: frozenset[str] = REQUEST_INPUTS  # no policy document: assume any input matters


def rule_inputs(document: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Per feature, the variables its rules read, from a policy document (`GET
    /v1/policies/{version}`'s `document`). A name in a string literal counts too: erring
    towards asking the service is the safe side."""
    found: dict[str, set[str]] = {}
    for rule in document.get("rules") or []:
        if isinstance(rule, Mapping) and isinstance(rule.get("feature"), str):
            text = json.dumps(rule.get("when", ""))
            found.setdefault(rule["feature"], set()).update(_VARIABLE.findall(text))
    return {feature: frozenset(names) for feature, names in found.items()}


@dataclass(frozen=True)
class KeySet:
    """The published keys (`GET /.well-known/jwks.json`): Ed25519 keys by kid."""

    keys: Mapping[str, OKPKey]
    etag: str | None = None
    fetched_at: float = 0.0

    @classmethod
    def from_jwks(
        cls, document: str | bytes | Mapping[str, Any], *, etag: str | None = None
    ) -> KeySet:
        try:
            parsed = json.loads(document) if isinstance(document, str | bytes) else document
            entries = parsed["keys"]
            if not isinstance(entries, list):
                raise TypeError("keys is not a list")
        except (ValueError, TypeError, KeyError) as exc:
            raise ArtifactInvalid("bad_key_set", f"not a JWKS document ({exc})") from None
        keys: dict[str, OKPKey] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("kty") != "OKP":
                continue
            if entry.get("crv") != "Ed25519" or not isinstance(entry.get("kid"), str):
                continue
            try:
                keys[entry["kid"]] = OKPKey.import_key(entry)
            except (JoseError, ValueError, TypeError) as exc:
                raise ArtifactInvalid("bad_key_set", f"key {entry['kid']!r}: {exc}") from None
        return cls(keys, etag, time.time())


@dataclass(frozen=True, slots=True)
class FeatureEntry:
    """One feature of an artifact, prepared for `local.decide()`.

    `plain`: the answer to a check naming no subject, instance, tenant or context, or None
    when even that needs the service. `fixed`: that answer holds whatever the check names
    (a denial at steps 1–6). Otherwise `reads` (what the feature's rules read),
    `seat_required`, `instance_required` and `hard_meter` say what else the service decides.
    """

    name: str
    plain: Decision | None
    fixed: bool
    allowed: bool
    reads: frozenset[str]
    seat_required: bool
    instance_required: bool
    hard_meter: bool
    meter: str | None
    bound_decision: Decision | None  # instance_required, checked on the bound machine


@dataclass(frozen=True, eq=False)
class Artifact:
    """A verified artifact: its token and claims, and its features prepared for checks."""

    token: str
    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    entries: Mapping[str, FeatureEntry]
    skew: float = SKEW_S
    # Computed by verify() for the hot path: the instants it may be used between, when its
    # grace begins, the machine it is bound to.
    usable_from: float = 0.0
    usable_until: float = 0.0
    grace_from: float = 0.0
    bound: str | None = None
    unknown: dict[str, Decision] = field(default_factory=dict)

    @property
    def customer(self) -> str:
        return str(self.claims["sub"])

    @property
    def kid(self) -> str:
        return str(self.header["kid"])

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    @property
    def issued_at(self) -> int:
        return int(self.claims["iat"])

    @property
    def expires_at(self) -> int:
        return int(self.claims["exp"])

    @property
    def grace_until(self) -> int:
        return int(self.claims["grace_until"])

    @property
    def policy_version(self) -> int | None:
        value = self.claims.get("policy_version")
        return value if isinstance(value, int) else None

    @property
    def state_version(self) -> int | None:
        value = self.claims.get("state_version")
        return value if isinstance(value, int) else None

    @property
    def fingerprint(self) -> str | None:
        """The machine the artifact is bound to, if any."""
        return self.bound

    @property
    def limits(self) -> Mapping[str, Any]:
        limits = self.claims.get("limits")
        return limits if isinstance(limits, Mapping) else {}

    def usable(self, now: float, fingerprint: str | None = None) -> bool:
        """May this artifact answer at `now` on the machine `fingerprint`? Never before
        `nbf`/`iat` (− skew), never past `grace_until` (+ skew), and a machine-bound
        artifact never on another machine."""
        if self.bound is not None and fingerprint != self.bound:
            return False
        return self.usable_from <= now <= self.usable_until

    def in_grace(self, now: float) -> bool:
        return self.grace_from < now <= self.usable_until

    def unknown_feature(self, feature: str) -> Decision:
        """The answer for a feature the artifact's catalog does not have."""
        found = self.unknown.get(feature)
        if found is None:
            revision = self.claims.get("contract_revision")
            found = Decision(
                allowed=False,
                reason="feature_unknown",
                feature=feature,
                customer=self.customer,
                detail=f"'{feature}' is not a feature of policy version {self.policy_version}",
                policy_version=self.policy_version,
                contract_revision=revision if isinstance(revision, int) else None,
                local=True,
            )
            if len(self.unknown) < 1024:  # a caller probing random names stays bounded
                self.unknown[feature] = found
        return found

    def meter(self, name: str) -> Mapping[str, Any] | None:
        """A meter's limit document at issue time (`limit`, `used`, `remaining`, …), by the
        meter's name or a feature's that is metered by it."""
        meters = self.limits.get("meters")
        if not isinstance(meters, Mapping):
            return None
        entry = self.entries.get(name)
        key = entry.meter if entry is not None and entry.meter else name
        found = meters.get(key)
        return found if isinstance(found, Mapping) else None


ENTITLEMENTS_ONLY = frozenset({"period", "warnings", "exhausted"})


def verify(
    token: str | bytes,
    keys: KeySet,
    *,
    now: float | None = None,
    fingerprint: str | None = None,
    rules: Mapping[str, frozenset[str]] | None = None,
    skew: float = SKEW_S,
) -> Artifact:
    """Verify `token` against `keys` at `now` (seconds since the epoch; default: the clock).
    `fingerprint`: the artifact must be bound to this machine. `rules`: what each feature's
    rules read (`rule_inputs()` of the artifact's policy version); None when unknown."""
    text = (token.decode("ascii", "replace") if isinstance(token, bytes) else token).strip()
    try:
        compact = jws.extract_compact(text.encode("ascii"), registry=REGISTRY)
        header = dict(compact.headers())
    except (JoseError, ValueError, TypeError, UnicodeError) as exc:
        raise ArtifactInvalid("malformed", f"not a compact JWS ({exc or type(exc)})") from None
    if header.get("alg") != ALG:
        raise ArtifactInvalid("algorithm", f"the algorithm is {header.get('alg')!r}, not {ALG}")
    if header.get("typ") != TYP:
        raise ArtifactInvalid("malformed", f"typ is {header.get('typ')!r}, not {TYP}")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise ArtifactInvalid("malformed", "the header names no kid")
    key = keys.keys.get(kid)
    if key is None:
        raise ArtifactInvalid("unknown_kid", f"no key {kid!r} in the key set")
    try:
        jws.deserialize_compact(text, key, algorithms=[ALG], registry=REGISTRY)
    except BadSignatureError:
        raise ArtifactInvalid("bad_signature", f"the signature does not verify ({kid})") from None
    except JoseError as exc:
        raise ArtifactInvalid("malformed", f"the header is not acceptable ({exc})") from None
    claims = _claims(compact.payload)
    at = time.time() if now is None else now
    if claims["iat"] > at + skew:
        raise ArtifactInvalid("clock_behind", "issued in the future: is this clock behind?")
    if claims["nbf"] > at + skew:
        raise ArtifactInvalid("not_yet_valid", f"not valid before {claims['nbf']}")
    if at > claims["grace_until"] + skew:
        raise ArtifactInvalid("expired", f"expired (grace until {claims['grace_until']})")
    if fingerprint is not None:
        instance = claims.get("instance")
        bound = instance.get("fingerprint") if isinstance(instance, dict) else None
        if bound != fingerprint:
            raise ArtifactInvalid("wrong_machine", f"bound to {bound!r}, not {fingerprint!r}")
    instance = claims.get("instance")
    bound = instance.get("fingerprint") if isinstance(instance, dict) else None
    return Artifact(
        text,
        header,
        claims,
        _entries(claims, rules),
        skew,
        usable_from=max(claims["nbf"], claims["iat"]) - skew,
        usable_until=claims["grace_until"] + skew,
        grace_from=claims["exp"] + skew,
        bound=bound if isinstance(bound, str) else None,
    )


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError as exc:
        raise ArtifactInvalid("malformed", f"the payload is not JSON ({exc})") from None
    if not isinstance(claims, dict):
        raise ArtifactInvalid("malformed", "the payload is not a JSON object")
    for name in ("iss", "sub", "jti"):
        if not isinstance(claims.get(name), str):
            raise ArtifactInvalid("malformed", f"the claim {name!r} is missing")
    for name in ("iat", "nbf", "exp", "grace_until"):
        value = claims.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ArtifactInvalid("malformed", f"the claim {name!r} is not a NumericDate")
    if not isinstance(claims.get("features"), list):
        raise ArtifactInvalid("malformed", "the claim 'features' is missing")
    return claims


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _wallet_pays(credits: Mapping[str, Any], meter: str) -> bool:
    """The artifact's credit wallet enforces its balance on `meter` (`credits_exhausted`):
    `applies_to` holds line codes or prefixes ending in `*`."""
    patterns = credits.get("applies_to")
    if not credits.get("enforce") or not isinstance(patterns, list):
        return False
    code = f"meter:{meter}"
    return any(
        isinstance(p, str) and (code.startswith(p[:-1]) if p.endswith("*") else code == p)
        for p in patterns
    )


def _entries(
    claims: Mapping[str, Any], rules: Mapping[str, frozenset[str]] | None
) -> dict[str, FeatureEntry]:
    customer = str(claims["sub"])
    version = claims.get("policy_version")
    revision = claims.get("contract_revision")
    limits: dict[str, Any] = _object(claims.get("limits"))
    meters: dict[str, Any] = _object(limits.get("meters"))
    bound = _object(claims.get("instance")).get("fingerprint")
    credits = _object(claims.get("credits"))
    entries: dict[str, FeatureEntry] = {}
    for item in claims["features"]:
        if not isinstance(item, dict) or not isinstance(item.get("feature"), str):
            continue
        name = item["feature"]

        def answer(
            allowed: bool, reason: str, item: dict[str, Any] = item, **extra: Any
        ) -> Decision:
            return Decision(
                allowed=allowed,
                reason=reason,
                feature=item["feature"],
                customer=customer,
                policy_version=version if isinstance(version, int) else None,
                contract_revision=revision if isinstance(revision, int) else None,
                local=True,
                **extra,
            )

        reads = rules.get(name, frozenset()) if rules is not None else UNKNOWN_RULES
        allowed = bool(item.get("allowed"))
        reason = str(item.get("reason"))
        meter = item.get("meter") if isinstance(item.get("meter"), str) else None
        usage = _object(meters.get(meter)) if meter else None
        hard = bool(usage) and _object(usage).get("enforcement") == "hard"
        # A meter an enforcing credit wallet pays is decided on the balance: the service's.
        hard = hard or (meter is not None and _wallet_pays(credits, meter))
        seat, instance = bool(item.get("seat_required")), bool(item.get("instance_required"))
        fixed = not allowed and reason in STATIC_DENIALS
        plain: Decision | None
        if fixed or (not allowed and not (reads & LIVE_INPUTS) and reason not in LIVE_DENIALS):
            plain = answer(
                False,
                reason,
                missing=tuple(item.get("missing") or ()),
                rule_reason=item.get("rule_reason"),
            )
        elif not allowed or reads & LIVE_INPUTS or hard:
            plain = None  # decided with meter use or the clock: the service's to say
        elif seat:
            plain = answer(False, "seat_required", detail=f"'{name}' needs a subject")
        elif instance:
            plain = answer(False, "instance_required", detail=f"'{name}' needs an instance")
        else:
            warnings_ = ("soft_limit_exceeded",) if usage and usage.get("exhausted") else ()
            # The check's limit document, as the service answers it: the artifact's meter
            # entry is the entitlements' one, which also has `period`, `warnings`, `exhausted`.
            limit = (
                {k: v for k, v in usage.items() if k not in ENTITLEMENTS_ONLY} if usage else usage
            )
            # Past a soft limit the service allows with that reason (check/gates.py's meter
            # gate), not `ok`: the same here.
            plain = answer(
                True, warnings_[0] if warnings_ else "ok", warnings=warnings_, limit=limit
            )
        bound_decision = (
            answer(True, "ok")
            if instance and allowed and bound and not hard and not reads & LIVE_INPUTS
            else None
        )
        entries[name] = FeatureEntry(
            name=name,
            plain=plain,
            fixed=fixed,
            allowed=allowed,
            reads=reads,
            seat_required=seat,
            instance_required=instance,
            hard_meter=hard,
            meter=meter,
            bound_decision=bound_decision,
        )
    return entries
