"""Meter use for checks: each customer's hour, day and month totals, read from the counters.

    UsageCache.get(snapshot, now)   per worker, per customer: the entry if it is younger than
                                    `max_stale_s` (1 s, invariant 5's bound), else awaited
                                    from the next demand read: one query for every customer
                                    that checks wanted meanwhile, one such read at a time
    UsageCache.start() / stop()     the refresher: every `refresh_s` (0.25 s) it rereads, in
                                    one query, the current hour's counters of every customer
                                    checked in the last `active_s` whose entry is due, and
                                    adds them to the month and day before this hour (kept
                                    with the entry, reread whole when the hour turns, and
                                    after `base_s` a few per turn, oldest first)
    UsageCache.forget(customer)     after this worker ingested or consumed for the customer
    load(connection, …)             one select over the month's hourly counters
    yearly_since(snapshot, now)     where a yearly limit's use counts from: the hour its
                                    contract year starts in; None (no year read) when the
                                    plan limits nothing per year

Counters change with every event, so usage is not part of the snapshot (an invalidation per
event would empty the cache). Warm checks never wait on PostgreSQL: the refresher keeps the
entries of active customers at most `refresh_s` plus one read old, and a check only waits
for a customer it has not seen for `active_s` (docs/usage.md, "Metered checks"). Other
workers' events show within `refresh_s` (a late event in an earlier hour within `base_s`);
this worker's own ingestion and consumes `forget` the entry, so they show at once. `consume`
never uses this cache: it reads the counters under the customer's lock (check/consume.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from allotment.check.metrics import USAGE_READ_SECONDS, USAGE_READS
from allotment.check.values import MeterTotals, Snapshot, Usage
from allotment.contracts.years import contract_year
from allotment.kit.background import cancel
from allotment.kit.clock import utcnow
from allotment.kit.slicing import TimeSlice
from allotment.usage.meters import hour_of, month_of

log = logging.getLogger("allotment.check.meter_use")

# Per customer, meter and tenant: the month and the day before the current hour, and the
# current hour (sums, or for a max meter the greatest).
_BASES = text(
    "SELECT customer_id, meter, tenant, max(kind) AS kind, "
    "sum(value) FILTER (WHERE hour < :hour) AS month_sum, "
    "max(value) FILTER (WHERE hour < :hour) AS month_max, "
    "sum(value) FILTER (WHERE hour >= :day AND hour < :hour) AS day_sum, "
    "max(value) FILTER (WHERE hour >= :day AND hour < :hour) AS day_max, "
    "sum(value) FILTER (WHERE hour >= :hour) AS hour_sum, "
    "max(value) FILTER (WHERE hour >= :hour) AS hour_max "
    "FROM usage_counters WHERE customer_id = ANY(:ids) AND hour >= :month "
    "GROUP BY customer_id, meter, tenant"
)
# Per customer with a yearly limit, meter and tenant: the use from the hour its contract year
# starts in (`since`, one per customer) to the current hour.
_YEARS = text(
    "SELECT c.customer_id, c.meter, c.tenant, max(c.kind) AS kind, "
    "sum(c.value) AS year_sum, max(c.value) AS year_max FROM usage_counters c "
    "JOIN unnest(CAST(:ids AS bigint[]), CAST(:since AS timestamptz[])) AS y(id, since) "
    "ON c.customer_id = y.id AND c.hour >= y.since AND c.hour < :hour "
    "GROUP BY c.customer_id, c.meter, c.tenant"
)
# The current hour alone: what the refresher rereads for customers whose base is current.
_HOURS = text(
    "SELECT customer_id, meter, tenant, kind, value FROM usage_counters "
    "WHERE customer_id = ANY(:ids) AND hour = :hour"
)
_ZERO = Decimal(0)
_CHUNK = 1000  # customers per query
_DEMAND_CONNECT = USAGE_READ_SECONDS.labels("demand", "connect")
_DEMAND_TOTAL = USAGE_READ_SECONDS.labels("demand", "total")
_DEMAND_WAIT = USAGE_READ_SECONDS.labels("demand", "wait")  # per check that waited
_REFRESH_CONNECT = USAGE_READ_SECONDS.labels("refresh", "connect")
_REFRESH_TOTAL = USAGE_READ_SECONDS.labels("refresh", "total")
_REFRESH_LATE = USAGE_READ_SECONDS.labels("refresh", "late")  # the loop's lag, in effect
_AGED_PER_TURN = 50  # at least this many old bases reread per turn of the refresher

Part = tuple[str, str]  # (meter, tenant or "")
_NO_HOURS: dict[Part, tuple[str, Decimal]] = {}  # never mutated


@dataclass(frozen=True, slots=True)
class _Base:
    kind: str
    day: Decimal  # before the current hour
    month: Decimal
    year: Decimal | None = None  # the contract year's, read only for a yearly limit


def yearly_since(snapshot: Snapshot, now: datetime) -> datetime | None:
    """The hour the contract year holding `now` starts in, when the snapshot's plan limits a
    meter per year (an override keeps its meter's period); else None. Counters are hourly,
    so the year's first, partial hour counts whole (docs/contracts.md, "Contract years")."""
    plan, contract = snapshot.plan, snapshot.contract
    if plan is None or contract is None:
        return None
    if not any(limit.period == "year" for limit in plan.limits.values()):
        return None
    return hour_of(contract_year(contract.starts_at, now).start)


@dataclass(slots=True)
class _Entry:
    # Mutable only in `read_at`: a refresher pass that finds the counters unchanged renews
    # the entry in place (a thousand customers in a few hundred microseconds, no slices).
    read_at: float  # monotonic, just before the query that read it
    base_at: float  # when its base was read
    hour: datetime
    bases: dict[Part, _Base]
    hours: dict[Part, tuple[str, Decimal]]  # the current hour's counters, as read
    usage: Usage
    since: datetime | None = None  # where its contract year's use was read from


def _value(row: Any, period: str) -> Decimal:
    value = getattr(row, f"{period}_max" if row.kind == "max" else f"{period}_sum")
    return _ZERO if value is None else Decimal(value)


def _usage(
    bases: dict[Part, _Base], hours: dict[Part, tuple[str, Decimal]], now: datetime
) -> Usage:
    """The totals from the month and day before this hour, and this hour."""
    meters: dict[str, list[MeterTotals]] = {}
    kinds: dict[str, str] = {}
    tenants: dict[tuple[str, str], MeterTotals] = {}
    for part in bases.keys() | hours.keys():
        base = bases.get(part)
        kind, hour = hours.get(part, (base.kind if base else "add", _ZERO))
        day, month = (base.day, base.month) if base else (_ZERO, _ZERO)
        year = month if base is None or base.year is None else base.year
        if kind == "max":
            totals = MeterTotals(hour, max(day, hour), max(month, hour), max(year, hour))
        else:
            totals = MeterTotals(hour, day + hour, month + hour, year + hour)
        meter, tenant = part
        meters.setdefault(meter, []).append(totals)
        kinds[meter] = kind
        if tenant:
            tenants[part] = totals
    combined = {
        meter: _fold(parts, greatest=kinds[meter] == "max") for meter, parts in meters.items()
    }
    return Usage(as_of=now, meters=combined, tenants=tenants)


async def _bases(
    connection: AsyncConnection | AsyncSession,
    ids: Sequence[int],
    now: datetime,
    since: dict[int, datetime] | None = None,
) -> dict[int, tuple[dict[Part, _Base], dict[Part, tuple[str, Decimal]]]]:
    hour = hour_of(now)
    rows = await connection.execute(
        _BASES,
        {"ids": list(ids), "month": month_of(hour), "day": hour.replace(hour=0), "hour": hour},
    )
    found: dict[int, tuple[dict[Part, _Base], dict[Part, tuple[str, Decimal]]]] = {
        i: ({}, {}) for i in ids
    }
    for row in rows:
        bases, hours = found[row.customer_id]
        part = (row.meter, row.tenant)
        bases[part] = _Base(row.kind, _value(row, "day"), _value(row, "month"))
        if row.hour_sum is not None or row.hour_max is not None:  # as _HOURS reads them
            hours[part] = (row.kind, _value(row, "hour"))
    yearly = {i: at for i, at in (since or {}).items() if i in found}
    if yearly:
        years = await connection.execute(
            _YEARS, {"ids": list(yearly), "since": list(yearly.values()), "hour": hour}
        )
        for row in years:
            bases = found[row.customer_id][0]
            part = (row.meter, row.tenant)
            base = bases.get(part) or _Base(row.kind, _ZERO, _ZERO)
            bases[part] = _Base(base.kind, base.day, base.month, _value(row, "year"))
        for customer_id in yearly:  # a part unused this contract year: none of it
            bases = found[customer_id][0]
            for part, base in bases.items():
                if base.year is None:
                    bases[part] = _Base(base.kind, base.day, base.month, _ZERO)
    return found


async def _hours(
    connection: AsyncConnection, ids: Sequence[int], hour: datetime
) -> dict[int, dict[Part, tuple[str, Decimal]]]:
    """The current hour's counters of each customer (none read: no entry)."""
    rows = await connection.execute(_HOURS, {"ids": list(ids), "hour": hour})
    found: dict[int, dict[Part, tuple[str, Decimal]]] = {}
    for row in rows:
        found.setdefault(row.customer_id, {})[(row.meter, row.tenant)] = (
            row.kind,
            Decimal(row.value),
        )
    return found


async def load(
    connection: AsyncConnection | AsyncSession,
    *,
    customer_id: int,
    now: datetime,
    since: datetime | None = None,
) -> Usage:
    """One customer's totals as of `now`, read whole (the contract year's from `since`)."""
    years = {customer_id: since} if since is not None else None
    bases, hours = (await _bases(connection, [customer_id], now, years))[customer_id]
    return _usage(bases, hours, now)


def _fold(parts: list[MeterTotals], *, greatest: bool) -> MeterTotals:
    """Every tenant's totals as the customer's: summed, or the greatest for a max meter."""
    if greatest:
        return MeterTotals(
            max(p.hour for p in parts),
            max(p.day for p in parts),
            max(p.month for p in parts),
            max(p.year for p in parts),
        )
    return MeterTotals(
        sum((p.hour for p in parts), _ZERO),
        sum((p.day for p in parts), _ZERO),
        sum((p.month for p in parts), _ZERO),
        sum((p.year for p in parts), _ZERO),
    )


class UsageCache:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        refresh_s: float = 0.25,
        max_stale_s: float = 1.0,
        active_s: float = 60.0,
        base_s: float = 30.0,
        max_entries: int = 100_000,
    ) -> None:
        self.maker = maker
        self.refresh_s = refresh_s
        self.max_stale_s = max(max_stale_s, refresh_s)
        self.active_s = active_s
        self.base_s = base_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # customer → (id, last checked, where its yearly use counts from: yearly_since)
        self._active: dict[str, tuple[int, float, datetime | None]] = {}
        # Demand reads: customers waiting for the next read, and those in the read under way
        # (whose result is kept unless `forget` drops them from `_reads` meanwhile).
        self._pending: dict[str, tuple[int, datetime, datetime | None, asyncio.Future[Usage]]] = {}
        self._reads: dict[str, asyncio.Future[Usage]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        # Told of each customer whose use this worker changed (the read replica's note).
        self.on_forget: list[Callable[[str], None]] = []

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    def forget(self, customer: str) -> None:
        self._entries.pop(customer, None)
        self._reads.pop(customer, None)  # a read already running may predate the change
        for listener in self.on_forget:
            listener(customer)

    async def get(self, snapshot: Snapshot, now: datetime) -> Usage | None:
        """The customer's totals, at most `max_stale_s` old (the refresher keeps them at
        most `refresh_s` old while the customer is checked)."""
        if snapshot.customer_id is None:
            return None
        key = snapshot.customer
        clock = time.monotonic()
        since = yearly_since(snapshot, now)
        self._active[key] = (snapshot.customer_id, clock, since)
        if self._task is None:
            self.start()
        found = self._entries.get(key)
        if found is not None and found.since == since and clock - found.read_at < self.max_stale_s:
            return found.usage
        # Shielded: a cancelled check must not cancel the read other checks wait on.
        try:
            return await asyncio.shield(self._demand(key, snapshot.customer_id, now, since))
        finally:
            _DEMAND_WAIT.observe(time.monotonic() - clock)

    def last_known(self, customer: str) -> Usage | None:
        """The last use read for `customer`, however old: what checks go by while PostgreSQL
        cannot be read (flagged stale)."""
        entry = self._entries.get(customer)
        return entry.usage if entry is not None else None

    def _demand(
        self, key: str, customer_id: int, now: datetime, since: datetime | None
    ) -> asyncio.Future[Usage]:
        future = self._reads.get(key)
        if future is not None:
            return future
        pending = self._pending.get(key)
        if pending is not None:
            return pending[3]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending[key] = (customer_id, now, since, future)
        if self._reader is None or self._reader.done():
            self._reader = loop.create_task(self._read_pending())
        return future

    async def _read_pending(self) -> None:
        """Read every pending customer, up to `_CHUNK` per query, until none is left: under a
        burst of cold customers (a restart, a wave of new ones) checks share a few queries
        instead of queueing one each for the connection pool."""
        while self._pending:
            batch = dict(list(self._pending.items())[:_CHUNK])
            for key in batch:
                del self._pending[key]
            self._reads.update((key, future) for key, (_, _, _, future) in batch.items())
            now = max(at for _, at, _, _ in batch.values())
            hour = hour_of(now)
            USAGE_READS.labels("demand").inc()
            started = time.monotonic()
            # A customer whose entry is merely stale (checked again after a pause, or the
            # refresher fell behind) keeps its base: only its current hour is read, as the
            # refresher would. The month's aggregate is for the others.
            known = {
                key: entry
                for key in batch
                if (entry := self._entries.get(key)) is not None
                and entry.hour == hour
                and entry.since == batch[key][2]
                and started - entry.base_at < self.base_s
            }
            try:
                async with self.maker() as session:
                    connection = await session.connection(
                        execution_options={"isolation_level": "AUTOCOMMIT"}
                    )
                    sent = time.monotonic()  # the entries' age counts from here
                    _DEMAND_CONNECT.observe(sent - started)
                    cold = [c for key, (c, _, _, _) in batch.items() if key not in known]
                    years = {
                        c: since
                        for key, (c, _, since, _) in batch.items()
                        if key not in known and since is not None
                    }
                    found = await _bases(connection, cold, now, years) if cold else {}
                    warm = [batch[key][0] for key in known]
                    hours_of = await _hours(connection, warm, hour) if warm else {}
            except BaseException as exc:  # PostgreSQL down: these checks answer degraded
                for key, (_, _, _, future) in batch.items():
                    if self._reads.get(key) is future:
                        del self._reads[key]
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved: a waiter may have gone meanwhile
                if not isinstance(exc, Exception):
                    raise
                continue
            pause = TimeSlice().pause  # checks go on between slices
            for key, (customer_id, _, since, future) in batch.items():
                await pause()
                entry = known.get(key)
                if entry is None:
                    bases, hours = found[customer_id]
                    usage = _usage(bases, hours, now)
                    read = _Entry(sent, self._base_age(sent), hour, bases, hours, usage, since)
                else:
                    hours = hours_of.get(customer_id, {})
                    same = hours == entry.hours  # unchanged since the last read: totals stand
                    usage = entry.usage if same else _usage(entry.bases, hours, now)
                    read = _Entry(sent, entry.base_at, hour, entry.bases, hours, usage, since)
                usage = read.usage
                if self._reads.get(key) is future:  # else forgotten meanwhile: do not keep it
                    del self._reads[key]
                    self._keep(key, read)
                if not future.done():
                    future.set_result(usage)
            _DEMAND_TOTAL.observe(time.monotonic() - started)

    def _base_age(self, sent: float) -> float:
        """When a base read whole at `sent` counts as read: up to half of `base_s` earlier,
        at random. Customers read together (a restart, a wave of new ones, the hour's turn)
        then come due for their next whole read over fifteen seconds, not in the same pass;
        a base is never reread later than `base_s` after its read."""
        return sent - random.uniform(0.0, self.base_s / 2)

    def _keep(self, key: str, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    # -- the refresher

    async def _run(self) -> None:
        # Passes start every `refresh_s` (a pass's own time counts towards the gap, so a slow
        # pass does not stretch the age of every entry by its length twice over), with at
        # least a fifth of it between two passes for the loop and PostgreSQL.
        pause = self.refresh_s
        while True:
            slept = time.monotonic()
            await asyncio.sleep(pause)
            started = time.monotonic()
            _REFRESH_LATE.observe(started - slept - pause)
            try:
                await self.refresh(utcnow())
            except Exception as exc:  # PostgreSQL down: checks read on demand meanwhile
                log.debug("usage refresh failed: %s", exc)
            pause = max(self.refresh_s - (time.monotonic() - started), self.refresh_s / 5)

    async def refresh(self, now: datetime) -> int:
        """Reread the due entries of the customers checked in the last `active_s`: the
        current hour only, or (a new hour, or a base older than `base_s`) everything.
        Returns how many entries it renewed."""
        clock = time.monotonic()
        hour = hour_of(now)
        whole: list[tuple[str, int, _Entry]] = []
        aged: list[tuple[str, int, _Entry]] = []
        partial: list[tuple[str, int, _Entry]] = []
        for key, (customer_id, seen, since) in list(self._active.items()):
            if clock - seen > self.active_s:
                del self._active[key]
                continue
            entry = self._entries.get(key)
            if entry is None or key in self._reads or clock - entry.read_at < self.refresh_s:
                continue  # none yet (the next check reads it), being read, or fresh
            if entry.since != since:
                continue  # the contract year turned: the next check reads it on demand
            if entry.hour != hour:
                whole.append((key, customer_id, entry))
            elif clock - entry.base_at >= self.base_s:
                aged.append((key, customer_id, entry))
            else:
                partial.append((key, customer_id, entry))
        # Bases that are merely old are reread a few per turn, oldest first: customers first
        # seen together (a restart, a wave of checks) would otherwise all come due in the
        # same turn every `base_s`, one long slice of the loop for a thousand customers.
        aged.sort(key=lambda item: item[2].base_at)
        budget = max(_AGED_PER_TURN, 2 * len(self._active) * self.refresh_s // self.base_s)
        whole += aged[: int(budget)]
        partial += aged[int(budget) :]
        if not whole and not partial:
            return 0
        USAGE_READS.labels("refresh").inc()
        renewed = 0
        pause = TimeSlice().pause  # checks go on between slices
        started = time.monotonic()
        async with self.maker() as session:
            connection = await session.connection(
                execution_options={"isolation_level": "AUTOCOMMIT"}
            )
            _REFRESH_CONNECT.observe(time.monotonic() - started)
            # An entry is as old as the query that read it: the time just before the query
            # (not before waiting for a connection) is when its data was current at the latest.
            for chunk in _chunks(whole):
                sent = time.monotonic()
                years = {c: e.since for _, c, e in chunk if e.since is not None}
                found = await _bases(connection, [c for _, c, _ in chunk], now, years)
                for key, customer_id, entry in chunk:
                    await pause()
                    bases, hours = found[customer_id]
                    usage = _usage(bases, hours, now)
                    renewed += self._renew(
                        key,
                        entry,
                        _Entry(sent, self._base_age(sent), hour, bases, hours, usage, entry.since),
                    )
            for chunk in _chunks(partial):
                sent = time.monotonic()
                hours_of = await _hours(connection, [c for _, c, _ in chunk], hour)
                changed: list[tuple[str, _Entry, dict[Part, tuple[str, Decimal]]]] = []
                for key, customer_id, entry in chunk:
                    hours = hours_of.get(customer_id, _NO_HOURS)
                    if self._entries.get(key) is not entry:
                        continue  # forgotten or read on demand meanwhile
                    if hours == entry.hours:  # unchanged (the common case): the totals stand
                        entry.read_at = sent
                        renewed += 1
                    else:
                        changed.append((key, entry, hours))
                for key, entry, hours in changed:
                    await pause()
                    usage = _usage(entry.bases, hours, now)
                    renewed += self._renew(
                        key,
                        entry,
                        _Entry(sent, entry.base_at, hour, entry.bases, hours, usage, entry.since),
                    )
        _REFRESH_TOTAL.observe(time.monotonic() - started)
        return renewed

    def _renew(self, key: str, old: _Entry, new: _Entry) -> int:
        """Keep `new` unless the entry changed meanwhile (forgotten, or read on demand)."""
        if self._entries.get(key) is not old:
            return 0
        self._entries[key] = new
        return 1


def _chunks(items: list[tuple[str, int, _Entry]]) -> Iterable[list[tuple[str, int, _Entry]]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
