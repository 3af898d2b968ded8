"""The alerts that fired (`alerts_fired`) and the events announced (the webhook outbox), read
straight from their tables, for tests of what fires when."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import text

from allotment.db import session_scope
from allotment.instances import service as instances
from allotment.instances.schemas import InstanceRegister


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


async def announced(app: Any, event_type: str | None = None) -> list[dict[str, Any]]:
    """Every message written to the webhook outbox (optionally of one type), oldest first:
    its type, customer and `data`."""
    async with session_scope(app.state.sessionmaker) as session:
        rows = await session.execute(
            text(
                "SELECT event_type, customer_key, body FROM webhook_messages "
                "WHERE CAST(:t AS text) IS NULL OR event_type = :t ORDER BY created_at, id"
            ),
            {"t": event_type},
        )
        return [
            {"type": row.event_type, "customer": row.customer_key, **orjson.loads(row.body)}
            for row in rows
        ]


async def register_at(app: Any, fingerprint: str, at: Any, customer: str = "acme") -> None:
    """A VM registered for `customer` as if at `at` (the surge alert counts by instant)."""
    async with session_scope(app.state.sessionmaker) as session:
        await instances.register(
            session,
            customer_key=customer,
            data=InstanceRegister(fingerprint=fingerprint, kind="vm"),
            actor="test",
            now=at,
        )
