"""Usage reads: a meter's buckets over [from, to), exact at any instant (`usage/totals.py`).

    granularity   bucket                 value
    hour          the UTC hour           Σ of its events (max: the greatest)
    day, month    UTC day / month        Σ of its hours (max: the greatest hour)

A level (usage/levels.py) is its own value over each bucket: an average meter's
time-weighted mean, a percentile meter's percentile of the bucket's hours; neither is
measured past `as_of`, and an average shows every bucket its carried level is not 0 in.

Whole hours come from the hourly counters; an hour that `from` or `to` cuts is counted from
its events, so the first and last buckets hold exactly the part inside the range (their
`start` is `from` when it cuts them) and `total` is the usage of [from, to) to the event.
A unique count's hour or day holds the values first seen in it that month, so a month's
bucket is exactly its unique count; a range cutting a month counts what was first seen in it.
Empty buckets are left out.

`usage_of_meters` reads several meters in the same reads (the portal's usage page); `usage`
is it for one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.contracts import pools
from allotment.errors import ValidationFailed
from allotment.kit.clock import in_utc
from allotment.policy.catalog import Meter
from allotment.usage import totals
from allotment.usage.schemas import UsageBucket, UsageRead

Granularity = Literal["hour", "day", "month"]
# Refuses a read (raises a problem) before it runs: wiring.usage_read_guards()
UsageReadGuard = Callable[..., Awaitable[None]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AHEAD = timedelta(days=366)
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
    found = await usage_of_meters(
        session,
        customer_key=customer_key,
        meters=[meter],
        start=start,
        end=end,
        granularity=granularity,
        tenant=tenant,
        as_of=as_of,
    )
    return found[0]


async def usage_of_meters(
    session: AsyncSession,
    *,
    customer_key: str,
    meters: Sequence[Meter],
    start: datetime,
    end: datetime,
    granularity: Granularity,
    tenant: str | None,
    as_of: datetime,
) -> list[UsageRead]:
    """`usage` of several meters, in their order, read together: the same answers as one
    call each, in one set of reads (the portal's usage page shows every meter)."""
    start, end = (
        in_utc(start, path="query.from"),
        in_utc(end, path="query.to"),
    )  # UTC hours, days, months
    if end <= start:
        raise ValidationFailed(
            "`to` must be after `from`.",
            errors=[{"path": "query.to", "message": "must be after from"}],
        )
    if granularity == "hour" and (end - start).total_seconds() / 3600 > MAX_BUCKETS:
        raise ValidationFailed(
            f"At most {MAX_BUCKETS} hourly buckets; ask for days or months.",
            errors=[
                {"path": "query.granularity", "message": "too many hourly buckets for the range"}
            ],
        )
    customer_id = await pools.customer_id(session, customer_key=customer_key)
    # No event lies outside these (the late window and the future tolerance are days and
    # minutes): the range is read within them, so "to 9999-12-31" costs nothing.
    lo, hi = max(start, _EPOCH), min(end, as_of + _AHEAD)
    ledgers: Mapping[str, totals.Ledger] = {meter.name: totals.Ledger(meter) for meter in meters}
    if lo < hi and meters:
        ledgers = (
            await totals.read(
                session,
                customer_id=customer_id,
                meters=list(meters),
                start=lo,
                end=hi,
                as_of=as_of,
                tenant=tenant,
            )
        ).by_meter
    reads = []
    for meter in meters:
        ledger = ledgers[meter.name]
        buckets = []
        for key in _keys(ledger, lo, min(hi, as_of), granularity):
            bucket_start, bucket_end = max(start, key), min(end, _following(key, granularity))
            found = ledger.total(bucket_start, bucket_end)
            if found.events or found.quantity:
                buckets.append(
                    UsageBucket(start=bucket_start, value=found.quantity, events=found.events)
                )
        reads.append(
            UsageRead(
                customer=customer_key,
                meter=meter.name,
                aggregation=meter.aggregation,
                percentile=meter.percentile,
                tenant=tenant,
                granularity=granularity,
                from_=start,
                to=end,
                total=ledger.total(lo, hi).quantity if lo < hi else Decimal(0),
                buckets=buckets,
            )
        )
    return reads


def _keys(
    ledger: totals.Ledger, lo: datetime, until: datetime, granularity: Granularity
) -> list[datetime]:
    """The buckets to show: those holding events; for an average meter, whose level holds
    between readings, every bucket from its first reading (or `from`, when one is carried
    in) up to `until` (as_of: a level is not measured ahead of it)."""
    if ledger.meter.aggregation != "average":
        return sorted({_bucket(hour, granularity) for hour in ledger.hours()})
    firsts = [one.times[0] for one in ledger.series.values() if one.times]
    if not firsts:
        return []
    cursor = _bucket(max(lo, min(firsts)).replace(minute=0, second=0, microsecond=0), granularity)
    keys = []
    while cursor < until:
        keys.append(cursor)
        cursor = _following(cursor, granularity)
    return keys


def _bucket(hour: datetime, granularity: Granularity) -> datetime:
    if granularity == "hour":
        return hour
    day = hour.replace(hour=0)
    return day if granularity == "day" else day.replace(day=1)


def _following(key: datetime, granularity: Granularity) -> datetime:
    if granularity == "hour":
        return key + timedelta(hours=1)
    if granularity == "day":
        return key + timedelta(days=1)
    return (key + timedelta(days=32)).replace(day=1)


def billing_period(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding `now`: the billing period invoices price."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)
