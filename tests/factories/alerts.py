"""The alerts that fired, read straight from `alerts_fired`, for tests of what fires when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from allotment.db import session_scope


async def fired(app: Any, event_type: str | None = None) -> list[dict[str, Any]]:
    """Every alert fired (optionally of one type), oldest first: key fields and payload."""
    async with session_scope(app.state.sessionmaker) as session:
        rows = await session.execute(
            text(
                "SELECT type, subject, threshold, period, data FROM alerts_fired "
                "WHERE CAST(:t AS text) IS NULL OR type = :t ORDER BY id"
            ),
            {"t": event_type},
        )
        return [dict(row._mapping) for row in rows]
