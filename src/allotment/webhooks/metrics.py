"""Webhook metrics (docs/webhooks.md, "Metrics").

Counted by the worker that sends (`allotment worker --metrics-port`):
    allotment_webhook_attempts_total{outcome}   delivered, retried, given_up, gone, refused;
                                                interrupted: counted by the worker whose
                                                claim closed an attempt a dead one left open
    allotment_webhook_delivery_seconds          message written → receiver answered 2xx
Read from the database when the API's /metrics is scraped (any process can answer them):
    allotment_webhook_deliveries{state}         deliveries by state (pending, delivered, failed)
    allotment_webhook_queue_depth               pending deliveries due now (enabled endpoints)
    allotment_webhook_oldest_due_seconds        how long the oldest of those has been due
"""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger("allotment.webhooks")

ATTEMPTS = Counter(
    "allotment_webhook_attempts_total",
    "Webhook delivery attempts by outcome (delivered, retried, given_up, gone, refused, "
    "interrupted)",
    ["outcome"],
)
DELIVERY_SECONDS = Histogram(
    "allotment_webhook_delivery_seconds",
    "From the message's commit to the receiver's 2xx",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0, 300.0, 3600.0, 86400.0),
)
DELIVERIES = Gauge("allotment_webhook_deliveries", "Webhook deliveries by state", ["state"])
QUEUE_DEPTH = Gauge(
    "allotment_webhook_queue_depth", "Pending webhook deliveries due now (enabled endpoints)"
)
OLDEST_DUE = Gauge(
    "allotment_webhook_oldest_due_seconds",
    "Seconds since the oldest pending delivery (enabled endpoint) became due; 0 when none",
)

_READ = text(
    """
    SELECT d.state, count(*),
           count(*) FILTER (WHERE d.state = 'pending' AND e.enabled AND d.next_attempt_at <= now()),
           extract(epoch FROM now() - min(d.next_attempt_at)
                   FILTER (WHERE d.state = 'pending' AND e.enabled AND d.next_attempt_at <= now()))
    FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
    GROUP BY d.state
    """
)
READ_TIMEOUT_S = 1.0


async def refresh(engine: AsyncEngine) -> None:
    """Set the gauges from the database; on failure they keep their last values."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            async with engine.connect() as conn:
                rows = (await conn.execute(_READ)).all()
    except Exception as exc:  # /metrics must answer while PostgreSQL is down
        log.warning("webhook_metrics_unavailable", error=type(exc).__name__)
        return
    by_state = {state: 0 for state in ("pending", "delivered", "failed")}
    depth, oldest = 0, 0.0
    for state, count, due, age in rows:
        by_state[state] = int(count)
        depth += int(due)
        oldest = max(oldest, float(age or 0.0))
    for state, count in by_state.items():
        DELIVERIES.labels(state=state).set(count)
    QUEUE_DEPTH.set(depth)
    OLDEST_DUE.set(oldest)
