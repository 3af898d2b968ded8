"""OFREP shapes, both ways: an evaluation context → the checker's inputs, a decision → a flag.

Pure: no I/O, no clock, no app. The server routes (ofrep/endpoints.py) use it, and so can
anything else that answers OFREP from decision documents (the sidecar agent, docs/agent.md).

    context (OFREP)                        CheckRequest
    targetingKey                     →     subject
    customer                         →     customer (required unless the key is customer:<k>)
    instance, tenant                 →     instance, tenant
    anything else                    →     context (what rules read as `context`)

    flag key                               what it evaluates
    <feature>                              boolean: value, variant on/off,
                                           reason TARGETING_MATCH (allowed) or DISABLED
    <feature-or-meter>.limit               integer: the limit in force
    <feature-or-meter>.remaining           integer: what is left of it (this period)
                                           (none while no contract is in force; 0 for a
                                           seat or instance pool the contract lacks)

Errors are `OfrepError`s carrying the protocol's status and code; `error_body` renders
them (401, 403 and 429 have no body; 429 has `Retry-After` in whole seconds).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

from allotment.auth.principal import CUSTOMER_KEY_PATTERN
from allotment.check import evaluator
from allotment.check.values import CheckRequest, Snapshot
from allotment.kit.identifiers import MAX_FINGERPRINT, MAX_SUBJECT
from allotment.policy.catalog import Catalog
from allotment.policy.spec import NAME_PATTERN

FlagKind = Literal["feature", "limit", "remaining"]
ErrorCode = Literal[
    "FLAG_NOT_FOUND", "PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"
]

# The context keys with a place of their own in a check; the rest go to the rules' `context`.
TARGETING_KEY = "targetingKey"
RESERVED = frozenset({TARGETING_KEY, "customer", "instance", "tenant"})

_NAME = re.compile(NAME_PATTERN)
_CUSTOMER = re.compile(CUSTOMER_KEY_PATTERN)
_LIMIT_SUFFIXES: dict[str, FlagKind] = {".limit": "limit", ".remaining": "remaining"}


class OfrepError(Exception):
    """A request OFREP answers with an error: `status`, and for 400/404 the protocol's
    `code` with `details` (errorDetails); `retry_after_s` for a 429."""

    def __init__(
        self,
        status: int,
        details: str,
        *,
        code: ErrorCode | None = None,
        key: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(details)
        self.status = status
        self.code = code
        self.details = details
        self.key = key
        self.retry_after_s = retry_after_s


def invalid_context(details: str, key: str | None = None) -> OfrepError:
    return OfrepError(400, details, code="INVALID_CONTEXT", key=key)


def flag_not_found(key: str) -> OfrepError:
    return OfrepError(404, f"Flag '{key}' was not found", code="FLAG_NOT_FOUND", key=key)


@dataclass(frozen=True, slots=True)
class Flag:
    """A flag key, read: `name` is a feature (kind `feature`) or a feature or meter whose
    limit the flag reads (kinds `limit` and `remaining`)."""

    key: str
    name: str
    kind: FlagKind


def flag(key: str) -> Flag:
    """The flag `key` names; FLAG_NOT_FOUND for a key no catalog could hold."""
    for suffix, kind in _LIMIT_SUFFIXES.items():
        if key.endswith(suffix):
            name = key.removesuffix(suffix)
            if _NAME.match(name):
                return Flag(key, name, kind)
            raise flag_not_found(key)
    if _NAME.match(key):
        return Flag(key, key, "feature")
    raise flag_not_found(key)


def context_of(body: bytes, key: str | None = None) -> dict[str, Any]:
    """The evaluation context of a request body. Not JSON, or not an object: PARSE_ERROR; a
    `context` that is not an object: INVALID_CONTEXT. No `context` at all is an empty one
    (OpenFeature SDKs send `{}` when the application set none)."""
    try:
        document = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise OfrepError(
            400, f"The body is not valid JSON: {exc}", code="PARSE_ERROR", key=key
        ) from exc
    if not isinstance(document, dict):
        raise OfrepError(
            400, 'The body must be a JSON object: {"context": {...}}', code="PARSE_ERROR", key=key
        )
    context = document.get("context", {})
    if not isinstance(context, dict):
        raise invalid_context("`context` must be an object", key)
    return context


def _text(context: Mapping[str, Any], name: str, key: str | None, *, max_length: int) -> str | None:
    value = context.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid_context(f"context.{name} must be a string", key)
    if len(value) > max_length or "\x00" in value:
        raise invalid_context(f"context.{name} must be 1–{max_length} characters, no NUL", key)
    return value


def _customer_key(context: Mapping[str, Any], name: str, key: str | None) -> str | None:
    value = context.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _CUSTOMER.match(value):
        raise invalid_context(
            f"context.{name} must be a key: lowercase letters, digits and -_. (≤ 64)", key
        )
    return value


def check_request(
    context: Mapping[str, Any],
    *,
    feature: str,
    own_customers: frozenset[str] | None,
    key: str | None = None,
) -> CheckRequest:
    """The check an evaluation context asks for. `own_customers` are the customers of a
    customer-scoped key (None for a key that may name any customer): the only ones it may
    name (another: 403), and with just one, the default."""
    customer = _customer_key(context, "customer", key)
    if own_customers is not None:
        if customer is None and len(own_customers) == 1:
            (customer,) = own_customers
        elif customer is not None and customer not in own_customers:
            raise OfrepError(403, "a customer-scoped key evaluates its own customer only", key=key)
    if customer is None:
        raise invalid_context("context.customer is required: the customer's key", key)
    rules_context = {name: value for name, value in context.items() if name not in RESERVED}
    return CheckRequest(
        customer=customer,
        feature=feature,
        subject=_text(context, TARGETING_KEY, key, max_length=MAX_SUBJECT),
        instance=_text(context, "instance", key, max_length=MAX_FINGERPRINT),
        tenant=_customer_key(context, "tenant", key),
        context=rules_context or None,
    )


def _metadata(decision: Mapping[str, Any]) -> dict[str, bool | str | int | float]:
    """What OFREP flag metadata can carry of a decision (strings, numbers, booleans)."""
    metadata: dict[str, bool | str | int | float] = {
        "reason": decision["reason"],
        "decision_id": decision["decision_id"],
        "stale": decision["stale"],
    }
    for name in ("policy_version", "contract_revision", "rule_reason", "detail"):
        value = decision.get(name)
        if value is not None:
            metadata[name] = value
    for name in ("missing", "warnings"):
        values = decision.get(name)
        if values:
            metadata[name] = ",".join(values)
    return metadata


def evaluation(key: str, decision: Mapping[str, Any], *, targeted: bool) -> dict[str, Any]:
    """A feature's decision document as a boolean flag evaluation. An unknown feature is
    FLAG_NOT_FOUND; a seat feature asked without a subject (`targeted`: the context had a
    targetingKey) is TARGETING_KEY_MISSING — the decision, `seat_required`, is made and
    logged all the same."""
    reason = decision["reason"]
    if reason == "feature_unknown":
        raise flag_not_found(key)
    if reason == "seat_required" and not targeted:
        raise OfrepError(
            400,
            f"'{key}' needs a seat: set the targetingKey to the user's subject",
            code="TARGETING_KEY_MISSING",
            key=key,
        )
    allowed = bool(decision["allowed"])
    return {
        "key": key,
        "value": allowed,
        "variant": "on" if allowed else "off",
        "reason": "TARGETING_MATCH" if allowed else "DISABLED",
        "metadata": _metadata(decision),
    }


Pool = tuple[Literal["meter", "seats", "instances"], str]


def limit_pool(catalog: Catalog | None, name: str) -> Pool | None:
    """What `<name>.limit` reads: the meter `name`; else the feature `name`'s meter, its seat
    pool (`seat: required`) or its instance pool (`instance: required`). None: no such flag."""
    if catalog is None:
        return None
    if name in catalog.meters:
        return ("meter", name)
    feature = catalog.features.get(name)
    if feature is None:
        return None
    if feature.meter is not None:
        return ("meter", feature.meter)
    if feature.seat_required:
        return ("seats", "seats")
    if feature.instance_required:
        return ("instances", "instances")
    return None


def not_in_force(snapshot: Snapshot, now: datetime) -> str | None:
    """Why no limit of the snapshot's customer is in force at `now`, as the check's reason
    code (customer_unknown, no_active_contract, contract_not_started, trial_expired,
    contract_expired); None while its contract is in force."""
    if not snapshot.known:
        return "customer_unknown"
    denial = evaluator.term(snapshot.contract, now)
    return None if denial is None else denial.reason


def _standing(pool: Pool, limits: Mapping[str, Any]) -> tuple[int, int] | str:
    """(limit, remaining) of `pool` in the entitlements' `limits`; else why it has none:
    `no_pool` (a seat or instance pool the contract does not have: nothing may be held, as
    the rules' `seats.limit` / `instances.limit` 0 and a refused registration say) or
    `unlimited` (a meter without a limit)."""
    kind, name = pool
    held = limits.get("meters", {}).get(name) if kind == "meter" else limits.get(kind)
    if not held or held.get("limit") is None:
        return "unlimited" if kind == "meter" else "no_pool"
    remaining = held.get("remaining") if kind == "meter" else held.get("available")
    if remaining is None:  # a meter without use read yet: nothing used
        remaining = held["limit"]
    return int(held["limit"]), math.floor(remaining)


def limit_evaluation(
    target: Flag,
    pool: Pool,
    limits: Mapping[str, Any],
    *,
    absent: str | None,
    policy_version: int | None,
    stale: bool,
) -> dict[str, Any]:
    """A limit as an integer flag: the limit in force (`.limit`) or what is left of it
    (`.remaining`), variant `limited`. `absent` (`not_in_force`) names why no contract is in
    force: then the flag carries no value — the protocol's code default — reason DISABLED
    and variant `not_in_force`. A meter without a limit: no value either, variant
    `unlimited`. A seat or instance pool the contract lacks: 0, variant `limited`.
    `metadata.reason` says which (`ok`, `unlimited`, `no_pool`, or `absent`)."""
    metadata: dict[str, bool | str | int | float] = {"pool": f"{pool[0]}:{pool[1]}"}
    metadata["stale"] = stale
    if policy_version is not None:
        metadata["policy_version"] = policy_version
    if absent is not None:
        metadata["reason"] = absent
        # A variant all the same: the Python provider reads `variant` unconditionally.
        return {
            "key": target.key,
            "variant": "not_in_force",
            "reason": "DISABLED",
            "metadata": metadata,
        }
    standing = _standing(pool, limits)
    if standing == "unlimited":
        metadata["reason"] = "unlimited"
        return {
            "key": target.key,
            "variant": "unlimited",
            "reason": "DISABLED",
            "metadata": metadata,
        }
    if isinstance(standing, str):
        metadata["reason"] = standing
        limit, remaining = 0, 0
    else:
        metadata["reason"] = "ok"
        limit, remaining = standing
    metadata["limit"] = limit
    return {
        "key": target.key,
        "value": limit if target.kind == "limit" else remaining,
        "variant": "limited",
        "reason": "TARGETING_MATCH",
        "metadata": metadata,
    }


def limit_flags(
    catalog: Catalog | None,
    limits: Mapping[str, Any],
    *,
    absent: str | None,
    policy_version: int | None,
    stale: bool,
) -> list[dict[str, Any]]:
    """Every limit flag the catalog has — `.limit` and `.remaining` of each meter, and of
    each feature with a meter, a seat or an instance pool — evaluated from `limits`."""
    if catalog is None:
        return []
    names = sorted({*catalog.meters, *catalog.features})
    flags = []
    for name in names:
        pool = limit_pool(catalog, name)
        if pool is None:
            continue
        for suffix, kind in _LIMIT_SUFFIXES.items():
            flags.append(
                limit_evaluation(
                    Flag(name + suffix, name, kind),
                    pool,
                    limits,
                    absent=absent,
                    policy_version=policy_version,
                    stale=stale,
                )
            )
    return flags


def bulk_flags(
    decisions: Sequence[Mapping[str, Any]],
    limits: Iterable[dict[str, Any]],
    *,
    targeted: bool,
) -> list[dict[str, Any]]:
    """The `flags` of a bulk evaluation: each feature's evaluation (a seat feature without a
    targetingKey as its TARGETING_KEY_MISSING failure), then the limit flags."""
    flags: list[dict[str, Any]] = []
    for decision in decisions:
        key = decision["feature"]
        try:
            flags.append(evaluation(key, decision, targeted=targeted))
        except OfrepError as exc:
            flags.append(failure(exc, key))
    flags.extend(limits)
    return flags


def failure(exc: OfrepError, key: str | None = None) -> dict[str, Any]:
    """The protocol's failure document: `key` (single and per-flag), `errorCode`,
    `errorDetails`."""
    body: dict[str, Any] = {}
    if key is not None or exc.key is not None:
        body["key"] = key if key is not None else exc.key
    body["errorCode"] = exc.code or "GENERAL"
    body["errorDetails"] = exc.details
    return body


def error_body(exc: OfrepError) -> tuple[bytes | None, dict[str, str]]:
    """The body and headers of an error response: none for 401/403/429 (429 says when to
    retry in `Retry-After`, whole seconds); `failure` for an error with a protocol code
    (400, 404); else `{errorDetails}` (500, and statuses the protocol does not name)."""
    if exc.status == 429:
        return None, {"Retry-After": str(max(1, math.ceil(exc.retry_after_s or 1)))}
    if exc.status in (401, 403):
        return None, {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if exc.code is None:
        return orjson.dumps({"errorDetails": exc.details}), {}
    return orjson.dumps(failure(exc)), {}


def _without_ids(flags: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    # A decision id is new on every evaluation; everything else is the flag set's state.
    stripped = []
    for entry in flags:
        metadata = entry.get("metadata")
        if metadata and "decision_id" in metadata:
            metadata = {k: v for k, v in metadata.items() if k != "decision_id"}
            entry = {**entry, "metadata": metadata}
        stripped.append(dict(entry))
    return stripped


def etag(
    *,
    customer: str,
    state_version: int | None,
    policy_version: int | None,
    context: Mapping[str, Any],
    flags: Sequence[Mapping[str, Any]],
) -> str:
    """The bulk evaluation's entity tag: over the customer's state version, the policy
    version, the context and the evaluated flags themselves (less their decision ids), so a
    change that moves no version — a contract starting, a lease lapsing, a meter's use —
    still moves it."""
    material = orjson.dumps(
        [customer, state_version, policy_version, context, _without_ids(flags)],
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    return '"' + hashlib.sha256(material).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, current: str) -> bool:
    """RFC 9110 If-None-Match: `*`, or any listed tag equal (weakly) to `current`."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip().removeprefix("W/")
        if tag == "*" or tag == current or tag == current.strip('"'):
            return True
    return False
