"""The portal's background job: forget sessions and links that can no longer be used.

    purge(session, now=)   delete ended or expired sessions, then expired links no session
                           points to; how many rows went

Each link and session opened is in the audit log, so nothing is lost that an audit needs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_SESSIONS = text(
    "DELETE FROM portal_sessions WHERE coalesce(ended_at, expires_at) <= :now OR expires_at <= :now"
)
# A spent link stays while its session lives (the session's row points to it).
_LINKS = text(
    "DELETE FROM portal_links l WHERE l.expires_at <= :now "
    "AND NOT EXISTS (SELECT 1 FROM portal_sessions s WHERE s.link_id = l.id)"
)


async def purge(session: AsyncSession, *, now: datetime) -> int:
    sessions = (await session.execute(_SESSIONS, {"now": now})).rowcount  # type: ignore[attr-defined]
    links = (await session.execute(_LINKS, {"now": now})).rowcount  # type: ignore[attr-defined]
    return int(sessions) + int(links)
