"""Usage reads: a meter's buckets over a range, from the hourly counters (never the events).

    granularity   bucket                 value
    hour          the counter's hour     the counter
    day, month    UTC day / month        Σ of its hours (max: the greatest hour)

A unique count's hour or day holds the values first seen in it that month, so a month's
bucket is exactly its unique count; a range cutting a month counts what was first seen in it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.contracts import pools
from allotment.errors import ValidationFailed
from allotment.policy.catalog import Meter
from allotment.usage.schemas import UsageBucket, UsageRead

Granularity = Literal["hour", "day", "month"]
MAX_BUCKETS = 10_000

_BUCKETS = {
    "add": text(
        "SELECT date_trunc(:g, hour, 'UTC') AS start, sum(value) AS value, sum(events) AS events "
        "FROM usage_counters WHERE customer_id = :c AND meter = :m AND hour >= :f AND hour < :t "
        "AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant) GROUP BY 1 ORDER BY 1"
    ),
    "max": text(
        "SELECT date_trunc(:g, hour, 'UTC') AS start, max(value) AS value, sum(events) AS events "
        "FROM usage_counters WHERE customer_id = :c AND meter = :m AND hour >= :f AND hour < :t "
        "AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant) GROUP BY 1 ORDER BY 1"
    ),
}


async def usage(
    session: AsyncSession,
    *,
    customer_key: str,
    meter: Meter,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    tenant: str | None,
) -> UsageRead:
    if end <= start:
        raise ValidationFailed(
            "`to` must be after `from`.", errors=[{"path": "to", "message": "must be after from"}]
        )
    if granularity == "hour" and (end - start).total_seconds() / 3600 > MAX_BUCKETS:
        raise ValidationFailed(
            f"At most {MAX_BUCKETS} hourly buckets; ask for days or months.",
            errors=[{"path": "granularity", "message": "too many hourly buckets for the range"}],
        )
    customer_id = await pools.customer_id(session, customer_key=customer_key)
    kind = "max" if meter.aggregation == "max" else "add"
    rows = (
        await session.execute(
            _BUCKETS[kind],
            {
                "g": granularity,
                "c": customer_id,
                "m": meter.name,
                "f": start,
                "t": end,
                "tenant": tenant,
            },
        )
    ).all()
    buckets = [UsageBucket(start=r.start, value=r.value, events=r.events) for r in rows]
    values = [b.value for b in buckets]
    total = (max(values) if values else Decimal(0)) if kind == "max" else sum(values, Decimal(0))
    return UsageRead(
        customer=customer_key,
        meter=meter.name,
        aggregation=meter.aggregation,
        tenant=tenant,
        granularity=granularity,
        from_=start,
        to=end,
        total=total,
        buckets=buckets,
    )
