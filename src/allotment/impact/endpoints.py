"""The policy dry-run route: what publishing a version would change (impact/service.py)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Response

from allotment.auth.principal import Principal
from allotment.deps import SessionDep, require
from allotment.impact.schemas import DryRunRead
from allotment.impact.service import DEFAULT_LIMIT, MAX_LIMIT, dry_run
from allotment.policy.schemas import MAX_VERSION

router = APIRouter(prefix="/v1/policies", tags=["policies"])


@router.post("/{version}/dry-run", response_model=DryRunRead)
async def dry_run_policy(
    version: Annotated[
        int, Path(ge=1, le=MAX_VERSION, description="The version to try: a draft or published.")
    ],
    principal: Annotated[Principal, require()],
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Response:
    """Per customer following the active version: the features gained and lost and the
    limits changed were `version` published now. Changes nothing."""
    report = await dry_run(session, version=version, limit=limit, cursor=cursor)
    return Response(orjson.dumps(report), media_type="application/json")
