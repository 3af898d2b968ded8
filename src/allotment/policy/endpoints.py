"""Policies: versioned catalog documents; drafts are posted, published, rolled back, compared."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from allotment.auth.principal import Principal
from allotment.deps import SessionDep, SettingsDep, require
from allotment.kit.idempotency import IdempotencyDep
from allotment.kit.jsonx import dumps
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead
from allotment.policy import approvals, moves
from allotment.policy import service as policies
from allotment.policy.document import PolicyDocument
from allotment.policy.schemas import (
    MAX_VERSION,
    ApprovalCreate,
    ApprovalRead,
    PolicyDiffRead,
    PolicyPublish,
    PolicyRollback,
    PolicyVersionDetail,
    PolicyVersionRead,
)
from allotment.policy.validation import JSON_MEDIA_TYPES, YAML_MEDIA_TYPES

router = APIRouter(prefix="/v1/policies", tags=["policies"])

Admin = Annotated[Principal, require()]
Reader = Annotated[Principal, require("finance", "check")]
Version = Annotated[int, Path(ge=1, le=MAX_VERSION, description="A policy version number.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Force = Annotated[
    bool,
    Query(
        description="Move the pointer even though live contracts would be orphaned; the "
        "audit record names them (docs/policy.md#orphaned-contracts)."
    ),
]
_ORPHANS: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "Live contracts would be orphaned (`orphaned`: each contract, its "
        "customer and what it would lose), the version is a draft (rollback), or already active."
    }
}

_EXAMPLE_YAML = """currency: USD
features:
  reports: {}
  editor: {seat: required}
plans:
  team:
    features: [reports, editor]
    seats: {limit: 10}
    price: {base: "500.00", seat: {unit: "20.00", included: 5}}
"""
_EXAMPLE_JSON = {
    "currency": "USD",
    "features": {"reports": {}, "editor": {"seat": "required"}},
    "plans": {
        "team": {
            "features": ["reports", "editor"],
            "seats": {"limit": 10},
            "price": {"base": "500.00", "seat": {"unit": "20.00", "included": 5}},
        }
    },
}
_DOCUMENT_SCHEMA = {
    "type": "object",
    "description": "A policy document; its full JSON Schema is served at GET /v1/policies/schema.",
}
# The body is read raw (it may be YAML), so FastAPI cannot describe it; this does.
_POLICY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The policy document, as JSON or as YAML (docs/policy.md).",
        "content": {
            **{
                media_type: {"schema": _DOCUMENT_SCHEMA, "example": _EXAMPLE_JSON}
                for media_type in sorted(JSON_MEDIA_TYPES)
            },
            **{
                media_type: {"schema": {"type": "string"}, "example": _EXAMPLE_YAML}
                for media_type in sorted(YAML_MEDIA_TYPES)
            },
        },
    }
}


@cache
def _schema_body() -> bytes:
    return dumps(PolicyDocument.model_json_schema())


@router.post(
    "",
    status_code=201,
    response_model=PolicyVersionRead,
    openapi_extra=_POLICY_BODY,
    responses={
        200: {"model": PolicyVersionRead, "description": "The same content exists already."},
        415: {"description": "Neither JSON nor YAML."},
        422: {"description": "Invalid: every error, each with its path."},
    },
)
async def create_policy(
    request: Request, principal: Admin, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    """Store a draft version; posting a document that exists already returns that version."""
    # Without a Content-Type the body is taken as JSON, the API's default.
    media_type = request.headers.get("content-type") or "application/json"
    row, created = await policies.create_draft(
        session, text=await request.body(), media_type=media_type, actor=principal.actor
    )
    active = (await policies.pointer(session)).active_version
    return await idempotency.respond(
        PolicyVersionRead.of(row, active_version=active), status=201 if created else 200
    )


@router.get("", response_model=PageRead[PolicyVersionRead])
async def list_policies(
    principal: Reader, session: SessionDep, limit: Limit = DEFAULT_LIMIT, cursor: str | None = None
) -> PageRead[PolicyVersionRead]:
    """Every version, newest first."""
    page = await policies.list_versions(session, limit=limit, cursor=cursor)
    active = (await policies.pointer(session)).active_version
    return PageRead(
        items=[PolicyVersionRead.of(row, active_version=active) for row in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/schema",
    responses={200: {"content": {"application/schema+json": {}}, "description": "JSON Schema"}},
)
async def policy_schema(principal: Reader) -> Response:
    """The JSON Schema (2020-12) of a policy document."""
    return Response(_schema_body(), media_type="application/schema+json")


@router.get(
    "/active",
    response_model=PolicyVersionDetail,
    responses={404: {"description": "No version is published yet."}},
)
async def get_active_policy(principal: Reader, session: SessionDep) -> PolicyVersionDetail:
    """The version checks use now, with its document; 404 until one is published."""
    row = await policies.get_active(session)
    return PolicyVersionDetail.of(row, active_version=row.version)


@router.get("/{version}", response_model=PolicyVersionDetail)
async def get_policy(
    version: Version, principal: Reader, session: SessionDep
) -> PolicyVersionDetail:
    row = await policies.get(session, version)
    active = (await policies.pointer(session)).active_version
    return PolicyVersionDetail.of(row, active_version=active)


@router.get("/{version}/diff", response_model=PolicyDiffRead)
async def diff_policy(
    version: Version,
    principal: Reader,
    session: SessionDep,
    against: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_VERSION,
            description="The version to compare with; the active one when omitted.",
        ),
    ] = None,
) -> PolicyDiffRead:
    """What `version` adds, removes and changes relative to `against`, by path."""
    if against is None:
        against = (await policies.get_active(session)).version
    changes = await policies.diff(session, version=version, against=against)
    return PolicyDiffRead.model_validate({"version": version, "against": against, **changes})


@router.post(
    "/rollback",
    response_model=PolicyVersionRead,
    responses={404: {"description": "There is no such version."}, **_ORPHANS},
)
async def rollback_policy(
    body: PolicyRollback,
    principal: Admin,
    session: SessionDep,
    idempotency: IdempotencyDep,
    force: Force = False,
) -> Response:
    """Make an earlier published version active again."""
    row = await moves.rollback(
        session,
        to_version=body.to_version,
        actor=principal.actor,
        force=force,
        summary=body.summary,
    )
    return await idempotency.respond(PolicyVersionRead.of(row, active_version=row.version))


@router.post(
    "/{version}/publish",
    response_model=PolicyVersionRead,
    responses={
        **_ORPHANS,
        403: {"description": "Approval required, and only the publishing key approved it."},
    },
)
async def publish_policy(
    version: Version,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
    idempotency: IdempotencyDep,
    force: Force = False,
    body: PolicyPublish | None = None,
) -> Response:
    """Publish a version (it can never change again) and make it the active one; refused
    (409) when live contracts would be orphaned, unless `force=true`, and, when sign-off is
    required, without another admin key's approval (409, or 403 for self-approval). The
    version already active is refused (409 policy-already-active), as rollback refuses it."""
    row = await moves.publish(
        session,
        version=version,
        actor=principal.actor,
        force=force,
        summary=body.summary if body is not None else None,
        require_approval=settings.policy_require_approval,
    )
    return await idempotency.respond(PolicyVersionRead.of(row, active_version=row.version))


@router.post(
    "/{version}/approvals",
    status_code=201,
    response_model=ApprovalRead,
    responses={409: {"description": "This key holds an unused approval of the version."}},
)
async def approve_policy(
    version: Version,
    principal: Admin,
    session: SessionDep,
    idempotency: IdempotencyDep,
    body: ApprovalCreate | None = None,
) -> Response:
    """Approve a version for publishing (sign-off, docs/release-notes.md#sign-off): one
    publish by another admin key may then use it. A key holds at most one unused approval
    of a version (409 already-approved)."""
    row = await approvals.approve(
        session,
        version=version,
        actor=principal.actor,
        comment=body.comment if body is not None else None,
    )
    return await idempotency.respond(ApprovalRead.model_validate(row), status=201)


@router.get("/{version}/approvals", response_model=list[ApprovalRead])
async def list_policy_approvals(
    version: Version, principal: Reader, session: SessionDep
) -> list[ApprovalRead]:
    """Every approval of the version, oldest first, and which publish used each."""
    await policies.get(session, version)  # 404 for a version that does not exist
    rows = await approvals.list_approvals(session, version=version)
    return [ApprovalRead.model_validate(row) for row in rows]
