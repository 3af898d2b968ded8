"""Announcing events: each in the transaction of the action that caused it.

    announce(session, type, data, customer_key=)   an event every such action sends
                                                   (entitlements.changed, policy.published)
    fire(session, type, data, customer_id=, customer_key=, subject=, threshold=, period=, at=)
                                                   an alert, once per (customer, type,
                                                   subject, threshold, period): True when
                                                   this call fired it

Both write the webhook message in the caller's transaction (webhooks/outbox.py), so a
rolled-back action announces nothing and a committed one loses nothing, and count the event
in `allotment_alert_events_total` once the transaction commits. `fire` first claims the
alert's key in `alerts_fired` (ON CONFLICT DO NOTHING): of two requests that cross the same
threshold at once, the second waits on the first's uncommitted key and then finds it taken.
docs/webhooks.md ("Event types") lists every type, when it fires and its payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.alerts.metrics import EVENTS
from allotment.db import after_commit
from allotment.kit.jsonx import dumps
from allotment.webhooks import outbox

_CLAIM = text(
    "INSERT INTO alerts_fired (customer_id, type, subject, threshold, period, fired_at, data) "
    "VALUES (:customer, :type, :subject, :threshold, :period, :at, CAST(:data AS jsonb)) "
    "ON CONFLICT DO NOTHING RETURNING id"
)


async def announce(
    session: AsyncSession,
    event_type: str,
    data: Mapping[str, Any],
    *,
    customer_key: str | None = None,
) -> None:
    await outbox.emit(session, event_type, data, customer_key=customer_key)
    after_commit(session, EVENTS.labels(event_type).inc)


async def fire(
    session: AsyncSession,
    event_type: str,
    data: Mapping[str, Any],
    *,
    customer_id: int,
    customer_key: str,
    subject: str,
    threshold: str,
    period: str,
    at: datetime,
) -> bool:
    claimed = (
        await session.execute(
            _CLAIM,
            {
                "customer": customer_id,
                "type": event_type,
                "subject": subject,
                "threshold": threshold,
                "period": period,
                "at": at,
                "data": dumps(dict(data)).decode(),
            },
        )
    ).first()
    if claimed is None:
        return False
    await announce(session, event_type, data, customer_key=customer_key)
    return True
