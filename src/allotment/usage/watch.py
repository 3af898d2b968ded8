"""What an ingestion crossed: a meter's limit thresholds and its surges (docs/webhooks.md).

After the counters are written, in the same transaction, `watch` reads — in ONE statement,
and only when some counter it moved belongs to a watched meter (one with a limit, or a
`usage_surge` in the policy's `alerts`) — each watched meter's use this period and over the
surge windows. The use before the batch is that minus what the batch added (the counters it
wrote, already in hand), so a crossing is seen exactly when it happens:

    usage.threshold_reached   the use moved from under p % of the limit to at or over it,
                              for each p of `alerts.usage_thresholds` (default 80, 100)
    usage.surge               the use over the last window (whole hours, the current one
                              included) moved past `factor` times the window before, by at
                              least `min`

A `max` meter's earlier peak is not known from the batch: when the batch set the peak, the
threshold is tried (the alert's key keeps it to once). Each alert fires once per threshold
and period (alerts/service.fire), however many batches cross it at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.alerts import service as alerts
from allotment.alerts.crossing import crossed, number, period_start
from allotment.check.gates import meter_limit
from allotment.check.meter_use import yearly_since
from allotment.check.values import Snapshot
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Surge, UsageLimit
from allotment.policy.durations import format_duration
from allotment.usage.meters import CounterKey, Delta, hour_of

HOUR = timedelta(hours=1)
ZERO = Decimal(0)

_USE = text(
    "SELECT c.customer_id, c.meter, max(c.kind) AS kind, "
    "coalesce(sum(c.value) FILTER (WHERE c.hour >= w.since), 0) AS total, "
    "coalesce(max(c.value) FILTER (WHERE c.hour >= w.since), 0) AS peak, "
    "coalesce(sum(c.value) FILTER (WHERE c.hour >= w.recent), 0) AS recent, "
    "coalesce(sum(c.value) FILTER (WHERE c.hour >= w.baseline AND c.hour < w.recent), 0) "
    "AS baseline FROM usage_counters c JOIN unnest(CAST(:ids AS bigint[]), "
    "CAST(:meters AS text[]), CAST(:since AS timestamptz[]), CAST(:recent AS timestamptz[]), "
    "CAST(:baseline AS timestamptz[])) AS w(id, meter, since, recent, baseline) "
    "ON c.customer_id = w.id AND c.meter = w.meter AND c.hour >= least(w.since, w.baseline) "
    "GROUP BY c.customer_id, c.meter"
)


@dataclass(frozen=True)
class Watch:
    snapshot: Snapshot
    customer_id: int
    meter: str
    limit: UsageLimit | None  # with usage_thresholds to cross
    since: datetime  # the limit's period start (or the surge baseline's, without a limit)
    surge: Surge | None
    recent: datetime  # the surge window's first hour
    baseline: datetime  # the window before it


def watches(
    snapshots: Mapping[int, Snapshot], counters: Mapping[CounterKey, Delta], now: datetime
) -> list[Watch]:
    """The watched meters among the counters a batch moved; no I/O."""
    found: dict[tuple[int, str], Watch] = {}
    for customer_id, _tenant, meter, _hour in counters:
        if (customer_id, meter) in found:
            continue
        snapshot = snapshots.get(customer_id)
        if snapshot is None or snapshot.catalog is None:
            continue
        rules = snapshot.catalog.alerts
        limit = meter_limit(snapshot, meter, now) if rules.usage_thresholds else None
        surge = rules.usage_surge.get(meter)
        if limit is None and surge is None:
            continue
        recent = baseline = hour_of(now)
        if surge is not None:
            hours = math.ceil(surge.window / HOUR)
            recent = hour_of(now) - (hours - 1) * HOUR
            baseline = recent - hours * HOUR
        since = baseline
        if limit is not None:
            year = yearly_since(snapshot, now) if limit.period == "year" else None
            since = period_start(limit.period, now, year_start=year)
        found[(customer_id, meter)] = Watch(
            snapshot, customer_id, meter, limit, since, surge, recent, baseline
        )
    return list(found.values())


async def watch(
    session: AsyncSession,
    *,
    snapshots: Mapping[int, Snapshot],
    counters: Mapping[CounterKey, Delta],
    now: datetime,
) -> None:
    """Fire what the batch's `counters` crossed (nothing read when no meter is watched)."""
    wanted = watches(snapshots, counters, now)
    if not wanted:
        return
    rows = await session.execute(
        _USE,
        {
            "ids": [w.customer_id for w in wanted],
            "meters": [w.meter for w in wanted],
            "since": [w.since for w in wanted],
            "recent": [w.recent for w in wanted],
            "baseline": [w.baseline for w in wanted],
        },
    )
    use = {(row.customer_id, row.meter): row for row in rows}
    for w in wanted:
        row = use.get((w.customer_id, w.meter))
        if row is None:
            continue
        added = [
            (hour, delta)
            for (customer_id, _t, meter, hour), delta in counters.items()
            if customer_id == w.customer_id and meter == w.meter
        ]
        if w.limit is not None:
            await _thresholds(session, w, row, added, now)
        if w.surge is not None:
            await _surge(session, w, w.surge, row, added, now)


async def _thresholds(
    session: AsyncSession,
    w: Watch,
    row: Any,
    added: list[tuple[datetime, Delta]],
    now: datetime,
) -> None:
    assert w.limit is not None and w.snapshot.catalog is not None
    if row.kind == "max":
        after = Decimal(row.peak)
        batch_peak = max((d.value for h, d in added if h >= w.since), default=ZERO)
        before = after if batch_peak < after else ZERO
    else:
        after = Decimal(row.total)
        before = after - sum((d.value for h, d in added if h >= w.since), ZERO)
    percents = w.snapshot.catalog.alerts.usage_thresholds
    for percent in crossed(before=before, after=after, limit=w.limit.limit, percents=percents):
        await alerts.fire(
            session,
            "usage.threshold_reached",
            {
                "customer": w.snapshot.customer,
                "meter": w.meter,
                "threshold_percent": percent,
                "limit": w.limit.limit,
                "used": number(after),
                "period": w.limit.period,
                "period_start": isoformat(w.since),
                "enforcement": w.limit.enforcement,
            },
            customer_id=w.customer_id,
            customer_key=w.snapshot.customer,
            subject=w.meter,
            threshold=str(percent),
            period=isoformat(w.since),
            at=now,
        )


async def _surge(
    session: AsyncSession,
    w: Watch,
    surge: Surge,
    row: Any,
    added: list[tuple[datetime, Delta]],
    now: datetime,
) -> None:
    recent = Decimal(row.recent)
    baseline = Decimal(row.baseline)
    before = recent - sum((d.value for h, d in added if h >= w.recent), ZERO)
    if not surge.surged(now=recent, then=baseline) or surge.surged(now=before, then=baseline):
        return
    await alerts.fire(
        session,
        "usage.surge",
        {
            "customer": w.snapshot.customer,
            "meter": w.meter,
            "used": number(recent),
            "baseline": number(baseline),
            "window": format_duration(surge.window),
            "window_start": isoformat(w.recent),
            "factor": number(surge.factor),
            "min": surge.min,
        },
        customer_id=w.customer_id,
        customer_key=w.snapshot.customer,
        subject=w.meter,
        threshold="",
        period=isoformat(w.recent),
        at=now,
    )
