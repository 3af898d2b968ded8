from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import select

from allotment.auth.principal import CUSTOMER_KEY_PATTERN, Principal
from allotment.check import consume
from allotment.check.decisions import DecisionRecord
from allotment.check.schemas import BatchBody, BatchRead, CheckBody, DecisionRead
from allotment.check.snapshot import StoreUnavailable
from allotment.check.values import CheckRequest
from allotment.db import transaction
from allotment.deps import Require, SessionDep, require
from allotment.errors import ServiceUnavailable
from allotment.kit.idempotency import IdempotentReplay, idempotency_for, replay_response
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, paginate

router = APIRouter(tags=["check"])

# One guard object, shared by the routes and by check/fastpath.py, so both enforce the same.
CHECK_GUARD = Require("check")
CheckScope = Annotated[Principal, Depends(CHECK_GUARD)]
JSON = "application/json"


def _request(body: CheckBody) -> CheckRequest:
    return CheckRequest(
        customer=body.customer,
        feature=body.feature,
        subject=body.subject,
        instance=body.instance,
        tenant=body.tenant,
        consume=body.consume,
        context=body.context,
    )


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    # Named in components by the app (app._name_inline_bodies), as FastAPI names the bodies
    # it parses itself; its nested models refer to their own components.
    body = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema = {"content": {JSON: {"schema": body}}, "required": True}
    return {"requestBody": schema}


# The hot path parses its body with pydantic-core straight from bytes (no FastAPI body
# parameter, no stdlib json); the schema is documented through openapi_extra instead.
# Bad bodies still answer problem+json: errors.py handles pydantic's ValidationError.
@router.post("/v1/check", response_model=DecisionRead, openapi_extra=_body_doc(CheckBody))
async def check(request: Request, principal: CheckScope) -> Response:
    """May this customer (subject, instance) use this feature now?"""
    body = CheckBody.model_validate_json(await request.body())
    if body.consume is not None:
        return await _consume(request, principal, body)
    return Response(await request.app.state.checker.check(_request(body)), media_type=JSON)


async def _consume(request: Request, principal: Principal, body: CheckBody) -> Response:
    """The consuming check: one transaction (check/consume.py), with idempotency. The fast
    path reaches this without FastAPI's dependencies, so the transaction and the
    idempotency record are opened here, as the dependencies would."""
    state = request.app.state
    request.state.principal = principal
    try:
        async with transaction(
            state.sessionmaker,
            request_id=getattr(request.state, "request_id", None),
            bus=getattr(state, "bus", None),
        ) as session:
            idempotency = await idempotency_for(request, session)
            payload = await consume.consume(
                session,
                checker=state.checker,
                request=_request(body),
                decision=consume.decision_id(principal.key_id, idempotency.key),
                engine=state.engine,
            )
            return await idempotency.respond(orjson.loads(payload))
    except IdempotentReplay as exc:
        return replay_response(exc)


@router.post("/v1/check/batch", response_model=BatchRead, openapi_extra=_body_doc(BatchBody))
async def check_batch(request: Request, principal: CheckScope) -> Response:
    """Up to 100 features for one customer, decided from one snapshot read."""
    body = BatchBody.model_validate_json(await request.body())
    base = CheckRequest(
        customer=body.customer,
        feature="",
        subject=body.subject,
        instance=body.instance,
        tenant=body.tenant,
        context=body.context,
    )
    payload = await request.app.state.checker.batch(base, body.features)
    return Response(payload, media_type=JSON)


@router.get("/v1/customers/{key}/entitlements")
async def entitlements(
    # A key no customer can have is refused, as /v1/check refuses it, rather than looked up
    # (and cached, and echoed) as an unknown customer.
    key: Annotated[str, Path(pattern=CUSTOMER_KEY_PATTERN)],
    principal: Annotated[Principal, require("check", "finance", customer_param="key")],
    request: Request,
) -> dict[str, Any]:
    """The customer's whole current state: every feature with access and reason, limits,
    contract and renewal date — what a dashboard or an SDK caches."""
    try:
        return await request.app.state.checker.entitlements(key)  # type: ignore[no-any-return]
    except StoreUnavailable as exc:
        raise ServiceUnavailable("The store is unavailable and nothing is cached.") from exc


@router.get("/v1/decisions")
async def list_decisions(
    principal: Annotated[Principal, require("finance")],
    session: SessionDep,
    customer: str | None = None,
    allowed: bool | None = None,
    feature: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Logged decisions, newest first: every denial and a sample of allows."""
    query = select(DecisionRecord)
    if customer is not None:
        query = query.where(DecisionRecord.customer == customer)
    if allowed is not None:
        query = query.where(DecisionRecord.allowed == allowed)
    if feature is not None:
        query = query.where(DecisionRecord.feature == feature)
    page = await paginate(
        session, query, DecisionRecord.id, limit=limit, cursor=cursor, descending=True
    )
    return {
        "items": [
            {
                "decision_id": r.id,
                "at": r.at,
                "customer": r.customer,
                "feature": r.feature,
                "subject": r.subject,
                "instance": r.instance,
                "tenant": r.tenant,
                "allowed": r.allowed,
                "reason": r.reason,
                "detail": r.detail,
                "policy_version": r.policy_version,
                "contract_revision": r.contract_revision,
                "stale": r.stale,
            }
            for r in page.items
        ],
        "next_cursor": page.next_cursor,
    }
