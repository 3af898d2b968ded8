"""The OFREP routes: one flag (`POST /ofrep/v1/evaluate/flags/{key}`) and every flag of a
customer (`POST /ofrep/v1/evaluate/flags`, with `ETag` / `If-None-Match`).

They decide with the app's `Checker`, exactly as /v1/check does (same snapshots, decision
log, metrics and degraded modes), and map with ofrep/mapping.py. Requests reach them through
ofrep/fastpath.py, which also renders every error in the protocol's shape; the routes stay
registered for the OpenAPI document and the route-scope test (ofrep/openapi.py documents
their responses).
"""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, Request, Response

from allotment.auth.principal import Principal
from allotment.check.service import Checker
from allotment.check.values import CheckRequest
from allotment.deps import Require, authenticate
from allotment.errors import Forbidden
from allotment.kit.clock import utcnow
from allotment.ofrep import mapping
from allotment.ofrep.mapping import OfrepError

router = APIRouter(tags=["openfeature"])
JSON = "application/json"
# How long a client should wait when the store is down and nothing is cached.
RETRY_AFTER_S = 1


class OfrepGuard(Require):
    """`check` (or `admin`), or `customer:<key>` — the customer is named in the body's
    context, so such a key is held to its own customer by the route (mapping.check_request),
    not here. The key comes as `Authorization: Bearer` or, as OFREP allows, `X-API-Key`."""

    customer_in_body = True

    def __init__(self) -> None:
        super().__init__("check")

    async def __call__(self, request: Request) -> Principal:
        principal = await authenticate(request, request.headers.get("x-api-key") or None)
        may = principal.allows(self.scopes, customer=None, read_only=True)
        if not may and not principal.customer_scoped:
            raise Forbidden("This API key lacks the scope OFREP needs (admin, check).")
        return principal


OFREP_GUARD = OfrepGuard()
OfrepScope = Annotated[Principal, Depends(OFREP_GUARD)]


def own_customers(principal: Principal) -> frozenset[str] | None:
    """The customers a customer-scoped key may evaluate; None: any (check, admin)."""
    if "admin" in principal.scopes or "check" in principal.scopes:
        return None
    return frozenset(
        scope.removeprefix("customer:")
        for scope in principal.scopes
        if scope.startswith("customer:")
    )


@router.post("/ofrep/v1/evaluate/flags/{key}")
async def evaluate_flag(key: str, request: Request, principal: OfrepScope) -> Response:
    """Evaluate one flag: a feature (boolean) or a limit (`<feature-or-meter>.limit`,
    `.remaining`: integer) for the customer and subject of the context."""
    checker: Checker = request.app.state.checker
    started = time.perf_counter()
    try:
        target = mapping.flag(key)
        context = mapping.context_of(await request.body(), key)
        check = mapping.check_request(
            context, feature=target.name, own_customers=own_customers(principal), key=key
        )
        if target.kind == "feature":
            decision = await checker.decision(check)
            if decision["reason"] in _BEFORE_THE_FEATURE and not _defines(checker, check, key):
                raise mapping.flag_not_found(key)
            document = mapping.evaluation(key, decision, targeted=check.subject is not None)
        else:
            document = await _limit(checker, target, check.customer)
        return Response(orjson.dumps(document), media_type=JSON)
    finally:
        checker.observe("ofrep", time.perf_counter() - started)


# Reasons decided before the evaluator looks the feature up: the flag may not even exist.
_BEFORE_THE_FEATURE = frozenset({"customer_unknown", "outage_default"})


def _defines(checker: Checker, check: CheckRequest, key: str) -> bool:
    """Whether the policy defines the feature `check` names, for a decision made without
    looking (an unknown customer, an outage with nothing cached): a flag the policy does
    not define is FLAG_NOT_FOUND whoever the customer. The catalog is the customer's cached
    snapshot's, else the last this worker loaded; none known (no policy ever published, or
    an outage since start-up): True — the decision stands."""
    snapshot = checker.snapshots.peek(check.customer, utcnow())
    catalog = snapshot.catalog if snapshot is not None else None
    if catalog is None and checker._last_catalog is not None:  # the outage fallback's own
        catalog = checker._last_catalog[1]
    return catalog is None or check.feature in catalog.features


async def _limit(checker: Checker, target: mapping.Flag, customer: str) -> dict[str, object]:
    now = utcnow()
    snapshot, stale = await checker.snapshot(customer, now)
    if snapshot is None:
        raise OfrepError(429, "the store is unavailable", retry_after_s=RETRY_AFTER_S)
    pool = mapping.limit_pool(snapshot.catalog, target.name)
    if pool is None:
        raise mapping.flag_not_found(target.key)
    absent = mapping.not_in_force(snapshot, now)
    return mapping.limit_evaluation(
        target,
        pool,
        {} if absent else await checker.limits_of(snapshot, now),
        absent=absent,
        policy_version=snapshot.policy_version,
        stale=stale,
    )


@router.post("/ofrep/v1/evaluate/flags")
async def evaluate_flags(
    request: Request,
    principal: OfrepScope,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Evaluate every flag of the context's customer — each feature, and each limit — from
    one snapshot read. `ETag` names the result; send it back as `If-None-Match` and an
    unchanged result is a 304 without a body."""
    checker: Checker = request.app.state.checker
    started = time.perf_counter()
    try:
        context = mapping.context_of(await request.body())
        base = mapping.check_request(context, feature="", own_customers=own_customers(principal))
        now = utcnow()
        snapshot, stale = await checker.snapshot(base.customer, now)
        if snapshot is None:
            raise OfrepError(429, "the store is unavailable", retry_after_s=RETRY_AFTER_S)
        catalog = snapshot.catalog
        names = sorted(catalog.features) if catalog is not None else []
        decisions = await checker.decisions_of(base, names, snapshot, stale, now)
        absent = mapping.not_in_force(snapshot, now)
        limits = mapping.limit_flags(
            catalog,
            {} if absent else await checker.limits_of(snapshot, now),
            absent=absent,
            policy_version=snapshot.policy_version,
            stale=stale,
        )
        flags = mapping.bulk_flags(decisions, limits, targeted=base.subject is not None)
        tag = mapping.etag(
            customer=base.customer,
            state_version=snapshot.state_version,
            policy_version=snapshot.policy_version,
            context=context,
            flags=flags,
        )
        if mapping.etag_matches(if_none_match, tag):
            return Response(status_code=304, headers={"ETag": tag})
        metadata: dict[str, object] = {"customer": base.customer, "stale": stale}
        if snapshot.policy_version is not None:
            metadata["policy_version"] = snapshot.policy_version
        body = orjson.dumps({"flags": flags, "metadata": metadata})
        return Response(body, media_type=JSON, headers={"ETag": tag})
    finally:
        checker.observe("ofrep_bulk", time.perf_counter() - started)
