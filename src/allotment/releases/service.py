"""Release notes: written on every publish and rollback, read by version and as a changelog.

    record(session, move)               the policy pointer-move hook (wiring.py): the notes
    notes_for(session, version) → dict  the notes of the latest move to `version` (public:
                                        the `policy.published` webhook and the portal read it)
    changelog(session, limit=, cursor=) → a page of entries, newest first

`record` runs in the publish's (or rollback's) transaction before the pointer moves, so the
dry-run (impact/service.dry_run) still compares the version with the one active until now:
the notes carry the very report `POST /v1/policies/{v}/dry-run` would have answered at that
instant. The body's shape is documented, field by field, in docs/release-notes.md.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.errors import NotFound
from allotment.impact.service import dry_run
from allotment.kit.clock import isoformat
from allotment.kit.pagination import Page, paginate
from allotment.policy import service as policies
from allotment.policy.moves import PointerMove
from allotment.releases.models import ReleaseNote
from allotment.releases.notes import changes, impact_of

__all__ = ["NOTES_CUSTOMERS", "ReleaseNotesNotFound", "changelog", "entry", "notes_for", "record"]

# The notes list at most this many affected customers (and as many pinned ones), each with
# its estimated invoice change (two invoice previews each, in the publish's transaction);
# the summary counts all of them.
NOTES_CUSTOMERS = 500


class ReleaseNotesNotFound(NotFound):
    type = "release-notes-not-found"
    title = "No release notes"


async def record(session: AsyncSession, move: PointerMove) -> None:
    """Write the notes of `move`: the diff from the version active until now, in words, the
    dry-run's impact, the contracts it leaves behind, and the human summary."""
    new = (await policies.get(session, move.version)).document
    old = None if move.previous is None else (await policies.get(session, move.previous)).document
    report = (
        None
        if move.previous is None
        else await dry_run(session, version=move.version, limit=NOTES_CUSTOMERS, now=move.at)
    )
    body = {
        "version": move.version,
        "action": move.action,
        "previous_version": move.previous,
        "at": isoformat(move.at),
        "actor": move.actor,
        "approved_by": move.approved_by,
        "summary": move.summary,
        "changes": changes(old, new),
        "impact": impact_of(report),
        "orphaned": [] if report is None else report["orphaned"],
    }
    session.add(
        ReleaseNote(
            version=move.version,
            action=move.action,
            previous_version=move.previous,
            actor=move.actor,
            created_at=move.at,
            body=body,
        )
    )
    await session.flush()


async def notes_for(session: AsyncSession, version: int) -> dict[str, Any]:
    """The notes written when `version` last became active (its publish, or a later rollback
    or re-publish to it); 404 when it never did."""
    row = (
        await session.execute(
            select(ReleaseNote)
            .where(ReleaseNote.version == version)
            .order_by(ReleaseNote.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if row is None:
        await policies.get(session, version)  # 404 policy-not-found for an unknown version
        raise ReleaseNotesNotFound(
            f"Policy version {version} has never been published, so it has no release notes; "
            "they are written when it is published (or rolled back to)."
        )
    return {"id": row.id, **row.body}


async def changelog(session: AsyncSession, *, limit: int, cursor: str | None) -> Page[ReleaseNote]:
    """Every publish and rollback, newest first."""
    return await paginate(
        session, select(ReleaseNote), ReleaseNote.id, limit=limit, cursor=cursor, descending=True
    )


def entry(row: ReleaseNote) -> dict[str, Any]:
    """One changelog entry: the move, its summary, its changes in words and the counts."""
    body = row.body
    return {
        "id": row.id,
        "version": row.version,
        "action": row.action,
        "previous_version": row.previous_version,
        "at": body["at"],
        "actor": row.actor,
        "approved_by": body["approved_by"],
        "summary": body["summary"],
        "changes": [change["text"] for change in body["changes"]],
        "impact": body["impact"]["summary"],
    }
