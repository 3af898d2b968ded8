"""policy.published: a publish announces the version with its release notes.

A policy pointer-move hook (wiring.pointer_move_hooks), run after the notes are written
(releases/service.record) in the publish's transaction, so the event carries exactly the
notes `GET /v1/policies/{v}/release-notes` answers. A rollback publishes nothing: its
entitlement changes go out as entitlements.changed (policy/moves.py).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.alerts import service as alerts
from allotment.policy import service as policies
from allotment.policy.moves import PointerMove
from allotment.releases.service import notes_for


async def announce_published(session: AsyncSession, move: PointerMove) -> None:
    if move.action != "publish":
        return
    version = await policies.get(session, move.version)
    await alerts.announce(
        session,
        "policy.published",
        {
            "version": move.version,
            "digest": version.digest,
            "previous_version": move.previous,
            "published_by": move.actor,
            "approved_by": move.approved_by,
            "summary": move.summary,
            "notes": await notes_for(session, move.version),
        },
    )
