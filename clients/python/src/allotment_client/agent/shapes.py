"""The agent's answers, shaped as the service's: check bodies read and refused as
`/v1/check` reads them, local decisions as decision documents, OFREP flag evaluations and
failures, and problem documents. Pure: no I/O, no clock.

    check_body(document, batch=)   → CheckInput, or raises Invalid (a 422's `errors`)
    decision_bytes(decision, artifact)   the decision document of a local answer
    ofrep_input(context, feature)  → CheckInput, or raises OfrepFailure
    flag_bytes(key, decision, targeted=) the flag evaluation of a local answer
    problem(status, detail, errors=)     an RFC 9457 problem document, as bytes

A local decision is the service's document with `decision_id: null` (the decision log holds
nothing for it), `stale: false`, `cache_ttl_s: 0` (ask the agent again: it is local) and
`decided_by: "agent"`; the response also carries `Allotment-Decided-By: agent`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from allotment_client.artifacts import Artifact
from allotment_client.models import Decision

# The service's identifiers (src/allotment/kit/identifiers.py), so the agent refuses what
# the service would refuse rather than answering it locally.
# Matched whole (`fullmatch`): a Python `$` would let a trailing newline through, which the
# service's validator (Rust regex) refuses.
CUSTOMER_KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
MAX_SUBJECT = 256
MAX_FINGERPRINT = 256
MAX_BATCH = 100
MAX_CONSUME = 1_000_000_000

PROBLEM_TYPE_BASE = "https://allotment.dev/problems/"
PROBLEM_MEDIA_TYPE = b"application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    503: "Service unavailable",
}
SLUGS = {422: "validation-error", 503: "upstream-unavailable"}

CHECK_FIELDS = frozenset(
    {"customer", "feature", "subject", "instance", "tenant", "consume", "context"}
)
BATCH_FIELDS = frozenset({"customer", "features", "subject", "instance", "tenant", "context"})


class Invalid(Exception):
    """A body the service would refuse with 422: `errors` as it lists them ({path, message})."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['path']}: {e['message']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class CheckInput:
    customer: str
    features: tuple[str, ...]
    subject: str | None = None
    instance: str | None = None
    tenant: str | None = None
    context: dict[str, Any] | None = None
    consume: int | None = None


def _text(document: Mapping[str, Any], name: str, limit: int, errors: list[dict[str, str]]) -> Any:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit or "\x00" in value:
        errors.append({"path": name, "message": f"a string of 1–{limit} characters, no NUL"})
        return None
    return value


def _key(
    document: Mapping[str, Any], name: str, errors: list[dict[str, str]], *, required: bool
) -> Any:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not CUSTOMER_KEY.fullmatch(value):
        errors.append({"path": name, "message": "a key: lowercase letters, digits and -_. (≤ 64)"})
        return None
    return value


def check_body(document: Any, *, batch: bool = False) -> CheckInput:
    """A `/v1/check` (or, `batch`, `/v1/check/batch`) body, read as the service reads it."""
    if not isinstance(document, dict):
        raise Invalid([{"path": "", "message": "the body must be a JSON object"}])
    errors: list[dict[str, str]] = []
    allowed = BATCH_FIELDS if batch else CHECK_FIELDS
    for name in document:
        if name not in allowed:
            errors.append({"path": str(name), "message": "unknown field"})
    customer = _key(document, "customer", errors, required=True)
    features: tuple[str, ...] = ()
    if batch:
        listed = document.get("features")
        if not isinstance(listed, list) or not 1 <= len(listed) <= MAX_BATCH:
            errors.append({"path": "features", "message": f"a list of 1–{MAX_BATCH} names"})
        else:
            for index, name in enumerate(listed):
                if not isinstance(name, str) or not NAME.fullmatch(name):
                    errors.append({"path": f"features.{index}", "message": "not a feature name"})
            features = tuple(listed)
    else:
        feature = document.get("feature")
        if not isinstance(feature, str) or not NAME.fullmatch(feature):
            errors.append({"path": "feature", "message": "a feature name: [a-z][a-z0-9_]{0,62}"})
        else:
            features = (feature,)
    subject = _text(document, "subject", MAX_SUBJECT, errors)
    instance = _text(document, "instance", MAX_FINGERPRINT, errors)
    tenant = _key(document, "tenant", errors, required=False)
    context = document.get("context")
    if context is not None and not isinstance(context, dict):
        errors.append({"path": "context", "message": "an object"})
    consume = document.get("consume")
    if consume is not None and (
        type(consume) is not int or not 1 <= consume <= MAX_CONSUME  # not True, not 5.0
    ):
        errors.append({"path": "consume", "message": f"an integer, 1–{MAX_CONSUME}"})
    if errors:
        raise Invalid(errors)
    return CheckInput(customer, features, subject, instance, tenant, context or None, consume)


def decision_document(decision: Decision, artifact: Artifact) -> dict[str, Any]:
    document: dict[str, Any] = {
        "allowed": decision.allowed,
        "reason": decision.reason,
        "feature": decision.feature,
        "customer": decision.customer,
        "warnings": list(decision.warnings),
        "policy_version": decision.policy_version,
        "contract_revision": artifact.claims.get("contract_revision"),
        "decision_id": None,
        "stale": False,
        "cache_ttl_s": 0,
        "decided_by": "agent",
    }
    if decision.detail is not None:
        document["detail"] = decision.detail
    if decision.missing:
        document["missing"] = list(decision.missing)
    if decision.rule_reason is not None:
        document["rule_reason"] = decision.rule_reason
    if decision.limit is not None:
        document["limit"] = dict(decision.limit)
    return document


class DecisionBytes:
    """Each local decision's document, encoded once: an artifact's decisions are shared,
    immutable objects, so a warm check costs a dictionary lookup here. Keyed by identity
    (the value keeps the decision alive, so an id is never reused while cached); bounded."""

    def __init__(self, limit: int = 8192) -> None:
        self.limit = limit
        self._encoded: dict[int, tuple[Decision, Artifact, bytes]] = {}

    def __call__(self, decision: Decision, artifact: Artifact) -> bytes:
        found = self._encoded.get(id(decision))
        if found is not None and found[0] is decision and found[1] is artifact:
            return found[2]
        encoded = orjson.dumps(decision_document(decision, artifact))
        if "grace_period" not in decision.warnings:  # a fresh object on every call
            if len(self._encoded) >= self.limit:
                self._encoded.clear()
            self._encoded[id(decision)] = (decision, artifact, encoded)
        return encoded


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    slug: str | None = None,
) -> bytes:
    title = TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (slug or SLUGS.get(status) or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return orjson.dumps(body)


# -- OFREP (docs/openfeature.md) ---------------------------------------------------------

TARGETING_KEY = "targetingKey"
RESERVED = frozenset({TARGETING_KEY, "customer", "instance", "tenant"})
LIMIT_SUFFIXES = (".limit", ".remaining")


class OfrepFailure(Exception):
    """An OFREP error answer: `status`, `code` (None: no body) and `details`."""

    def __init__(
        self, status: int, details: str, code: str | None = None, key: str | None = None
    ) -> None:
        super().__init__(details)
        self.status = status
        self.code = code
        self.details = details
        self.key = key

    def body(self) -> bytes | None:
        if self.code is None:
            return None
        document: dict[str, Any] = {}
        if self.key is not None:
            document["key"] = self.key
        document["errorCode"] = self.code
        document["errorDetails"] = self.details
        return orjson.dumps(document)


def is_limit_flag(key: str) -> bool:
    return key.endswith(LIMIT_SUFFIXES)


def ofrep_context(body: bytes, key: str | None) -> dict[str, Any]:
    """The evaluation context of a request body (no body, or no `context`: empty)."""
    try:
        document = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise OfrepFailure(400, f"The body is not valid JSON: {exc}", "PARSE_ERROR", key) from None
    if not isinstance(document, dict):
        raise OfrepFailure(
            400, 'The body must be a JSON object: {"context": {...}}', "PARSE_ERROR", key
        )
    context = document.get("context", {})
    if not isinstance(context, dict):
        raise OfrepFailure(400, "`context` must be an object", "INVALID_CONTEXT", key)
    return context


def _context_text(context: Mapping[str, Any], name: str, key: str, limit: int) -> str | None:
    value = context.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise OfrepFailure(
            400,
            f"context.{name} must be a string of 1–{limit} characters, no NUL",
            "INVALID_CONTEXT",
            key,
        )
    return value


def _context_key(context: Mapping[str, Any], name: str, key: str) -> str | None:
    value = context.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not CUSTOMER_KEY.fullmatch(value):
        raise OfrepFailure(
            400,
            f"context.{name} must be a key: lowercase letters, digits and -_. (≤ 64)",
            "INVALID_CONTEXT",
            key,
        )
    return value


def ofrep_input(context: Mapping[str, Any], key: str) -> CheckInput | None:
    """The check a boolean flag's evaluation context asks for; None when the context names
    no customer (the upstream decides: a `customer:<key>` agent key defaults to its own)."""
    if not NAME.fullmatch(key):
        raise OfrepFailure(404, f"Flag '{key}' was not found", "FLAG_NOT_FOUND", key)
    customer = _context_key(context, "customer", key)
    subject = _context_text(context, TARGETING_KEY, key, MAX_SUBJECT)
    instance = _context_text(context, "instance", key, MAX_FINGERPRINT)
    tenant = _context_key(context, "tenant", key)
    if customer is None:
        return None
    rules = {name: value for name, value in context.items() if name not in RESERVED}
    return CheckInput(customer, (key,), subject, instance, tenant, rules or None)


def flag_bytes(key: str, decision: Decision, artifact: Artifact, *, targeted: bool) -> bytes:
    """A local decision as a boolean flag evaluation, as the service maps it
    (src/allotment/ofrep/mapping.py `evaluation`): unknown feature → FLAG_NOT_FOUND, a seat
    feature without a targetingKey → TARGETING_KEY_MISSING. Metadata has no `decision_id`
    (nothing was logged) and says `decided_by: agent`."""
    if decision.reason == "feature_unknown":
        raise OfrepFailure(404, f"Flag '{key}' was not found", "FLAG_NOT_FOUND", key)
    if decision.reason == "seat_required" and not targeted:
        raise OfrepFailure(
            400,
            f"'{key}' needs a seat: set the targetingKey to the user's subject",
            "TARGETING_KEY_MISSING",
            key,
        )
    metadata: dict[str, bool | str | int | float] = {
        "reason": decision.reason,
        "stale": False,
        "decided_by": "agent",
    }
    revision = artifact.claims.get("contract_revision")
    for name, value in (
        ("policy_version", decision.policy_version),
        ("contract_revision", revision),
        ("rule_reason", decision.rule_reason),
        ("detail", decision.detail),
    ):
        if value is not None:
            metadata[name] = value
    if decision.missing:
        metadata["missing"] = ",".join(decision.missing)
    if decision.warnings:
        metadata["warnings"] = ",".join(decision.warnings)
    return orjson.dumps(
        {
            "key": key,
            "value": decision.allowed,
            "variant": "on" if decision.allowed else "off",
            "reason": "TARGETING_MATCH" if decision.allowed else "DISABLED",
            "metadata": metadata,
        }
    )
