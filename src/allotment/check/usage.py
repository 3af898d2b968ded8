"""Meter use for checks: each customer's hour, day and month totals, read from the counters.

    UsageCache.get(snapshot, now)   per worker, per customer; reread when older than
                                    `refresh_s` (default 0.25 s) or when the hour turned:
                                    one read per customer at a time, in the background while
                                    the entry is younger than `serve_stale_s` (warm checks
                                    never wait on PostgreSQL), awaited when older
    UsageCache.forget(customer)     after this worker ingested or consumed for the customer
    load(connection, …)             one select over the month's hourly counters

Counters change with every event, so usage is not part of the snapshot (an invalidation per
event would empty the cache); a plain check reads totals at most `refresh_s` old on other
workers, and at once on the worker that took the events. `consume` never uses this cache:
it reads the counters under the customer's lock (check/consume.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from allotment.check.model import MeterTotals, Snapshot, Usage
from allotment.usage.meters import hour_of, month_of

_TOTALS = text(
    "SELECT meter, tenant, max(kind) AS kind, "
    "sum(value) AS month_sum, max(value) AS month_max, "
    "sum(value) FILTER (WHERE hour >= :day) AS day_sum, "
    "max(value) FILTER (WHERE hour >= :day) AS day_max, "
    "sum(value) FILTER (WHERE hour >= :hour) AS hour_sum, "
    "max(value) FILTER (WHERE hour >= :hour) AS hour_max "
    "FROM usage_counters WHERE customer_id = :c AND hour >= :month GROUP BY meter, tenant"
)
_ZERO = Decimal(0)


def _pick(row: Any, period: str) -> Decimal:
    value = getattr(row, f"{period}_max" if row.kind == "max" else f"{period}_sum")
    return _ZERO if value is None else Decimal(value)


async def load(
    connection: AsyncConnection | AsyncSession, *, customer_id: int, now: datetime
) -> Usage:
    hour = hour_of(now)
    rows = (
        await connection.execute(
            _TOTALS,
            {
                "c": customer_id,
                "month": month_of(hour),
                "day": hour.replace(hour=0),
                "hour": hour,
            },
        )
    ).all()
    meters: dict[str, list[MeterTotals]] = {}
    kinds: dict[str, str] = {}
    tenants: dict[tuple[str, str], MeterTotals] = {}
    for row in rows:
        totals = MeterTotals(_pick(row, "hour"), _pick(row, "day"), _pick(row, "month"))
        meters.setdefault(row.meter, []).append(totals)
        kinds[row.meter] = row.kind
        if row.tenant:
            tenants[(row.meter, row.tenant)] = totals
    combined = {
        meter: _fold(parts, greatest=kinds[meter] == "max") for meter, parts in meters.items()
    }
    return Usage(as_of=now, meters=combined, tenants=tenants)


def _fold(parts: list[MeterTotals], *, greatest: bool) -> MeterTotals:
    """Every tenant's totals as the customer's: summed, or the greatest for a max meter."""
    if greatest:
        return MeterTotals(
            max(p.hour for p in parts), max(p.day for p in parts), max(p.month for p in parts)
        )
    return MeterTotals(
        sum((p.hour for p in parts), _ZERO),
        sum((p.day for p in parts), _ZERO),
        sum((p.month for p in parts), _ZERO),
    )


def _retrieved(task: asyncio.Task[Usage]) -> None:
    """A background read that failed (PostgreSQL down) is retried by the next check that
    needs it; its error is not a crash to report."""
    if not task.cancelled():
        task.exception()


class UsageCache:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        refresh_s: float = 0.25,
        serve_stale_s: float = 0.5,
        max_entries: int = 100_000,
    ) -> None:
        self.maker = maker
        self.refresh_s = refresh_s
        self.serve_stale_s = max(serve_stale_s, refresh_s)
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, datetime, Usage]] = OrderedDict()
        self._reads: dict[str, asyncio.Task[Usage]] = {}  # one read per customer at a time

    def forget(self, customer: str) -> None:
        self._entries.pop(customer, None)
        self._reads.pop(customer, None)  # a read already running may predate the change

    async def get(self, snapshot: Snapshot, now: datetime) -> Usage | None:
        """The customer's totals, at most `refresh_s` old and of the current hour."""
        if snapshot.customer_id is None:
            return None
        key = snapshot.customer
        found = self._entries.get(key)
        clock = time.monotonic()
        hour = hour_of(now)
        if found is not None and found[1] == hour:
            age = clock - found[0]
            if age < self.refresh_s:
                return found[2]
            if age < self.serve_stale_s:
                self._read(key, snapshot.customer_id, now)  # refresh in the background
                return found[2]
        return await asyncio.shield(self._read(key, snapshot.customer_id, now))

    def _read(self, key: str, customer_id: int, now: datetime) -> asyncio.Task[Usage]:
        task = self._reads.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(key, customer_id, now))
            task.add_done_callback(_retrieved)
            self._reads[key] = task
        return task

    async def _load(self, key: str, customer_id: int, now: datetime) -> Usage:
        started = time.monotonic()
        current = asyncio.current_task()
        try:
            async with self.maker() as session:
                connection = await session.connection(
                    execution_options={"isolation_level": "AUTOCOMMIT"}
                )
                usage = await load(connection, customer_id=customer_id, now=now)
        except BaseException:
            if self._reads.get(key) is current:
                del self._reads[key]
            raise
        if self._reads.get(key) is current:  # else forgotten meanwhile: do not keep it
            del self._reads[key]
            self._entries[key] = (started, hour_of(now), usage)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return usage
