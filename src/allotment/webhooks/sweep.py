"""What the worker's pass tidies in the webhook tables (docs/webhooks.md, "Delivery").

    close_interrupted(session, now=…, batch=…)        open attempts whose lease lapsed
    expire_previous_secrets(session, now=…, batch=…)  previous secrets past their overlap

An attempt is written `in_flight` when its delivery is claimed and closed when its answer is
recorded (webhooks/delivery.py). A worker that dies in between leaves it open; the next
claim of the delivery closes it as `interrupted`, but a delivery that is not claimed again
soon (its endpoint disabled, or slowed) would show it in flight for good: the worker's pass
closes those once the lease they were sent under has lapsed.

A rotated endpoint keeps its previous secret until `previous_secret_until`; past it the
secret no longer signs (the sender checks the instant) and the API shows no expiry
(service.read). The pass then drops the secret itself, so no expired secret is kept.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

INTERRUPTED = "interrupted: the worker sending it stopped before recording an answer"

_CLOSE_INTERRUPTED = text(
    """
    UPDATE webhook_attempts SET outcome = 'interrupted', error = :error
    WHERE id IN (
        SELECT a.id FROM webhook_attempts a
        JOIN webhook_deliveries d ON d.id = a.delivery_id
        WHERE a.outcome = 'in_flight' AND (d.lease_until IS NULL OR d.lease_until <= :now)
        LIMIT :batch)
      AND outcome = 'in_flight'
    """
)
_EXPIRE_PREVIOUS = text(
    """
    UPDATE webhook_endpoints SET previous_secret_sealed = NULL, previous_secret_until = NULL
    WHERE id IN (
        SELECT id FROM webhook_endpoints WHERE previous_secret_until <= :now LIMIT :batch)
      AND previous_secret_until <= :now
    """
)


async def close_interrupted(session: AsyncSession, *, now: datetime, batch: int) -> int:
    """Close up to `batch` open attempts whose delivery's lease lapsed by `now` as
    `interrupted`; how many. The outer conditions are checked again on the locked row, so
    an attempt closed meanwhile (answered, or by a claim) is left as it is."""
    result = await session.execute(
        _CLOSE_INTERRUPTED, {"now": now, "batch": batch, "error": INTERRUPTED}
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def expire_previous_secrets(session: AsyncSession, *, now: datetime, batch: int) -> int:
    """Drop the previous secret of up to `batch` endpoints whose overlap ended by `now`;
    how many. A rotation meanwhile (a new overlap) is left as it is."""
    result = await session.execute(_EXPIRE_PREVIOUS, {"now": now, "batch": batch})
    return int(getattr(result, "rowcount", 0) or 0)
