"""Usage reads: a meter's buckets over [from, to), exact at any instant (`usage/totals.py`).

    granularity   bucket                 value
    hour          the UTC hour           Σ of its events (max: the greatest)
    day, month    UTC day / month        Σ of its hours (max: the greatest hour)

Whole hours come from the hourly counters; an hour that `from` or `to` cuts is counted from
its events, so the first and last buckets hold exactly the part inside the range (their
`start` is `from` when it cuts them) and `total` is the usage of [from, to) to the event.
A unique count's hour or day holds the values first seen in it that month, so a month's
bucket is exactly its unique count; a range cutting a month counts what was first seen in it.
Empty buckets are left out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.contracts import pools
from allotment.errors import ValidationFailed
from allotment.policy.catalog import Meter
from allotment.usage import totals
from allotment.usage.meters import hour_of
from allotment.usage.schemas import UsageBucket, UsageRead

Granularity = Literal["hour", "day", "month"]
MAX_BUCKETS = 10_000


async def usage(
    session: AsyncSession,
    *,
    customer_key: str,
    meter: Meter,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    tenant: str | None,
    as_of: datetime,
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
    ledger = (
        await totals.read(
            session,
            customer_id=customer_id,
            meters=[meter],
            start=start,
            end=end,
            as_of=as_of,
            tenant=tenant,
        )
    ).by_meter[meter.name]
    bounds = [start, *(b for b in _boundaries(start, end, granularity) if start < b < end), end]
    buckets = []
    for bucket_start, bucket_end in zip(bounds, bounds[1:], strict=False):
        found = ledger.total(bucket_start, bucket_end)
        if found.events:
            buckets.append(
                UsageBucket(start=bucket_start, value=found.quantity, events=found.events)
            )
    return UsageRead(
        customer=customer_key,
        meter=meter.name,
        aggregation=meter.aggregation,
        tenant=tenant,
        granularity=granularity,
        from_=start,
        to=end,
        total=ledger.total(start, end).quantity,
        buckets=buckets,
    )


def billing_period(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding `now`: the billing period invoices price."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def _boundaries(start: datetime, end: datetime, granularity: Granularity) -> list[datetime]:
    """The UTC hour, day or month starts from the one holding `start` up to `end`."""
    cursor = hour_of(start)
    if granularity != "hour":
        cursor = cursor.replace(hour=0)
    if granularity == "month":
        cursor = cursor.replace(day=1)
    out = []
    while cursor < end:
        out.append(cursor)
        if granularity == "hour":
            cursor += timedelta(hours=1)
        elif granularity == "day":
            cursor += timedelta(days=1)
        else:
            cursor = (cursor + timedelta(days=32)).replace(day=1)
    return out
