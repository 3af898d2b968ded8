"""Release notes of a policy version (JSON or markdown) and the changelog of every move."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from allotment.auth.principal import Principal
from allotment.deps import SessionDep, require
from allotment.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRead
from allotment.policy.schemas import MAX_VERSION
from allotment.releases import service as releases
from allotment.releases.markdown import markdown
from allotment.releases.schemas import ChangelogEntryRead, ReleaseNotesRead

router = APIRouter(tags=["policies"])

Reader = Annotated[Principal, require("finance", "check")]


def _wants_markdown(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(
        part.split(";", 1)[0].strip().lower() == "text/markdown" for part in accept.split(",")
    )


@router.get(
    "/v1/policies/{version}/release-notes",
    response_model=ReleaseNotesRead,
    responses={
        200: {"content": {"text/markdown": {}}, "description": "With `Accept: text/markdown`."},
        404: {"description": "The version does not exist, or was never published."},
    },
)
async def release_notes(
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    request: Request,
    principal: Reader,
    session: SessionDep,
) -> Response:
    """The notes written when the version last became active: the changes in words, the
    impact on customers, the contracts it left behind and the human summary."""
    body = await releases.notes_for(session, version)
    if _wants_markdown(request):
        return Response(markdown(body), media_type="text/markdown; charset=utf-8")
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/v1/changelog", response_model=PageRead[ChangelogEntryRead])
async def changelog(
    principal: Reader,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Response:
    """Every publish and rollback, newest first."""
    page = await releases.changelog(session, limit=limit, cursor=cursor)
    return Response(
        orjson.dumps(
            {"items": [releases.entry(row) for row in page.items], "next_cursor": page.next_cursor}
        ),
        media_type="application/json",
    )
