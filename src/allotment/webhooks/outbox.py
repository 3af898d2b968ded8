"""The transactional outbox: `emit` writes a message in the caller's transaction.

    emit(session, "usage.threshold_reached", {...}, customer_key="acme") -> "msg_…"

One statement inserts the message, one delivery per enabled endpoint whose filter accepts
the type, and (when there is at least one delivery) a `NOTIFY` on `CHANNEL`. PostgreSQL
sends a notification only when its transaction commits, so a rolled-back change sends
nothing and a committed one wakes the delivery loop at once (webhooks/delivery.py); the
loop also polls, so a missed notification only delays a message. The caller commits
(docs/architecture.md, "The transaction boundary"): `emit` never does.

`purge` (run by the worker) drops settled messages past ALLOTMENT_WEBHOOKS_RETENTION.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.kit import clock
from allotment.kit.ids import new_id
from allotment.kit.jsonx import canonical
from allotment.webhooks import catalog

CHANNEL = "allotment_webhooks"

# Delivery ids name their message and endpoint (whd_<message ulid>_<endpoint ulid>): unique
# per pair, sorted by the message's time, and made in the statement without a round trip.
_WRITE = text(
    """
    WITH message AS (
        INSERT INTO webhook_messages (id, event_type, customer_key, body, created_at)
        VALUES (:id, :event_type, :customer_key, :body, :now)
        RETURNING id
    ), deliveries AS (
        INSERT INTO webhook_deliveries
            (id, message_id, endpoint_id, state, attempts, next_attempt_at, created_at)
        SELECT 'whd_' || substr(message.id, 5) || '_' || substr(e.id, 4), message.id, e.id,
               'pending', 0, :now, :now
        FROM message JOIN webhook_endpoints e ON e.enabled AND (
            CASE WHEN CAST(:endpoint_id AS text) IS NULL
                 THEN e.event_types IS NULL OR :event_type = ANY(e.event_types)
                 ELSE e.id = :endpoint_id END)
        RETURNING 1
    )
    SELECT pg_notify(:channel, '') FROM (SELECT 1 FROM deliveries LIMIT 1) AS any_delivery
    """
)


_PURGE = text(
    """
    DELETE FROM webhook_messages WHERE id IN (
        SELECT m.id FROM webhook_messages m
        WHERE m.created_at < :before AND NOT EXISTS (
            SELECT 1 FROM webhook_deliveries d WHERE d.message_id = m.id AND d.state = 'pending')
        LIMIT :batch)
    """
)


def body(event_type: str, data: Mapping[str, Any], *, at: datetime) -> str:
    """The body every endpoint receives for the message: `{type, timestamp, data}`."""
    return canonical({"type": event_type, "timestamp": clock.isoformat(at), "data": dict(data)})


async def emit(
    session: AsyncSession,
    event_type: str,
    data: Mapping[str, Any],
    *,
    customer_key: str | None = None,
) -> str:
    """Write a message of `event_type` (a name from webhooks/catalog.py) and its deliveries
    in the caller's transaction; returns the message id (the `webhook-id` header). `data`
    holds JSON values (an instant as `kit.clock.isoformat`; anything else is sent as its
    `str()`)."""
    if event_type not in catalog.SUBSCRIBABLE:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    return await _write(session, event_type, data, customer_key=customer_key, endpoint_id=None)


async def emit_test(session: AsyncSession, *, endpoint_id: str) -> str:
    """A `webhook.test` message for one endpoint alone, whatever its filter."""
    return await _write(
        session,
        catalog.WEBHOOK_TEST,
        {"endpoint_id": endpoint_id, "message": "A test message from Allotment."},
        customer_key=None,
        endpoint_id=endpoint_id,
    )


async def _write(
    session: AsyncSession,
    event_type: str,
    data: Mapping[str, Any],
    *,
    customer_key: str | None,
    endpoint_id: str | None,
) -> str:
    now = clock.utcnow()
    message_id = new_id("msg")
    await session.execute(
        _WRITE,
        {
            "id": message_id,
            "event_type": event_type,
            "customer_key": customer_key,
            "body": body(event_type, data, at=now),
            "now": now,
            "endpoint_id": endpoint_id,
            "channel": CHANNEL,
        },
    )
    return message_id


async def purge(session: AsyncSession, *, before: datetime, batch: int) -> int:
    """Delete up to `batch` messages written before `before` that nothing waits to send,
    with their deliveries and attempts (ON DELETE CASCADE); how many went."""
    result = await session.execute(_PURGE, {"before": before, "batch": batch})
    return int(getattr(result, "rowcount", 0) or 0)
