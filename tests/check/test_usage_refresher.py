"""The usage refresher (check/meter_use.py): entries of customers being checked are renewed in
bulk, so warm metered checks never wait on PostgreSQL, and what other workers ingest shows
within the refresh interval; forgotten or re-read entries are never overwritten with older
data."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import event, ingest_at, metered_document


@pytest.fixture(autouse=True)
async def _no_background_pass(app: Any, monkeypatch: Any) -> None:
    """These tests run the refresher's passes themselves: one running in the background
    meanwhile would renew (or reread) the entries first and make the counts race."""
    cache = app.state.checker.usage
    await cache.stop()
    monkeypatch.setattr(cache, "start", lambda: None)  # restored after the test
    # Bases read whole count as read at once here (no spreading), so ages are exact.
    monkeypatch.setattr(cache, "_base_age", lambda sent: sent)


async def _setup(client: httpx.AsyncClient, admin: dict[str, str], app: Any) -> Any:
    await publish_policy(client, admin, metered_document())
    for key in ("acme", "globex"):
        await create_customer(client, admin, key=key)
        await create_contract(client, admin, customer=key)
    return app.state.checker


def _age(cache: Any, key: str, seconds: float) -> Any:
    """Make the entry look `seconds` older (as if read then)."""
    entry = cache._entries[key]
    older = dataclasses.replace(
        entry, read_at=entry.read_at - seconds, base_at=entry.base_at - seconds
    )
    cache._entries[key] = older
    return older


async def test_the_refresher_renews_what_other_workers_ingested_in_one_pass(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    checker = await _setup(client, admin, app)
    cache = checker.usage
    now = datetime.now(UTC)
    for key in ("acme", "globex"):
        snapshot, _ = await checker.snapshot(key, now)
        assert (await cache.get(snapshot, now)).of("api_calls").month == 0
    # Another worker's ingestion: counters move, this worker is not told.
    sent = [event(f"{k}-1", subject=k, data={"count": 5}) for k in ("acme", "globex")]
    await ingest_at(app, sent, received=now)
    for key in ("acme", "globex"):
        _age(cache, key, cache.refresh_s)
    assert await cache.refresh(datetime.now(UTC)) == 2
    for key in ("acme", "globex"):
        snapshot, _ = await checker.snapshot(key, now)
        totals = (await cache.get(snapshot, now)).of("api_calls")
        assert (totals.hour, totals.day, totals.month) == (5, 5, 5)


async def test_a_base_older_than_base_s_is_reread_whole(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    checker = await _setup(client, admin, app)
    cache = checker.usage
    now = datetime.now(UTC)
    snapshot, _ = await checker.snapshot("acme", now)
    await cache.get(snapshot, now)
    # A late event earlier this month, counted in an hour before this one.
    earlier = max(now.replace(day=1, hour=0, minute=5), now - timedelta(days=2))
    if earlier.replace(minute=0, second=0, microsecond=0) == now.replace(
        minute=0, second=0, microsecond=0
    ):
        return  # the month is younger than an hour: no earlier hour to test
    await ingest_at(app, [event("late", time=earlier, data={"count": 7})], received=now)
    _age(cache, "acme", cache.refresh_s)
    await cache.refresh(datetime.now(UTC))  # the current hour only: the base stands
    assert (await cache.get(snapshot, now)).of("api_calls").month == 0
    _age(cache, "acme", cache.base_s)
    await cache.refresh(datetime.now(UTC))
    assert (await cache.get(snapshot, now)).of("api_calls").month == Decimal(7)


async def test_old_bases_are_reread_a_few_per_turn_oldest_first(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], monkeypatch: Any
) -> None:
    """Customers first seen together come due together every `base_s`; rereading all their
    bases in one turn was one long slice of the event loop. A turn takes the oldest few."""
    from allotment.check import meter_use

    monkeypatch.setattr(meter_use, "_AGED_PER_TURN", 1)
    checker = await _setup(client, admin, app)
    cache = checker.usage
    now = datetime.now(UTC)
    earlier = max(now.replace(day=1, hour=0, minute=5), now - timedelta(days=2))
    if earlier.replace(minute=0, second=0, microsecond=0) == now.replace(
        minute=0, second=0, microsecond=0
    ):
        return  # the month is younger than an hour: no earlier hour to test
    snapshots = {key: (await checker.snapshot(key, now))[0] for key in ("acme", "globex")}
    for snapshot in snapshots.values():
        await cache.get(snapshot, now)
    late = [event(f"late-{k}", subject=k, time=earlier, data={"count": 7}) for k in snapshots]
    await ingest_at(app, late, received=now)
    _age(cache, "globex", cache.base_s + 2)
    _age(cache, "acme", cache.base_s + 1)

    async def months() -> list[Decimal]:
        return [(await cache.get(s, now)).of("api_calls").month for s in snapshots.values()]

    assert await cache.refresh(datetime.now(UTC)) == 2  # both renewed, one of them whole
    assert await months() == [0, 7]  # globex's base was the older
    _age(cache, "acme", cache.refresh_s)
    _age(cache, "globex", cache.refresh_s)
    await cache.refresh(datetime.now(UTC))
    assert await months() == [7, 7]


async def test_a_stale_entry_read_on_demand_keeps_its_base_and_rereads_the_hour(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A customer checked again after a pause longer than `max_stale_s` (or missed by a busy
    refresher) waits for a demand read; its base is still good, so only the current hour is
    read, as the refresher would (the month's aggregate was most of a mixed batch's reads)."""
    checker = await _setup(client, admin, app)
    cache = checker.usage
    now = datetime.now(UTC)
    earlier = max(now.replace(day=1, hour=0, minute=5), now - timedelta(days=2))
    if earlier.replace(minute=0, second=0, microsecond=0) == now.replace(
        minute=0, second=0, microsecond=0
    ):
        return  # the month is younger than an hour: no earlier hour to test
    snapshot, _ = await checker.snapshot("acme", now)
    await cache.get(snapshot, now)
    sent = [event("now-1", data={"count": 2}), event("late-1", time=earlier, data={"count": 7})]
    await ingest_at(app, sent, received=now)
    _age(cache, "acme", cache.max_stale_s)
    totals = (await cache.get(snapshot, now)).of("api_calls")
    assert (totals.hour, totals.month) == (2, 2)  # this hour reread; the base kept
    _age(cache, "acme", cache.base_s)
    totals = (await cache.get(snapshot, now)).of("api_calls")
    assert (totals.hour, totals.month) == (2, 9)  # an old base: read whole


async def test_a_forgotten_entry_is_not_overwritten_by_a_refresh(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    checker = await _setup(client, admin, app)
    cache = checker.usage
    now = datetime.now(UTC)
    snapshot, _ = await checker.snapshot("acme", now)
    await cache.get(snapshot, now)
    old = _age(cache, "acme", cache.refresh_s)
    cache.forget("acme")
    assert await cache.refresh(datetime.now(UTC)) == 0
    assert "acme" not in cache._entries
    assert cache._renew("acme", old, old) == 0  # only the entry it read may be replaced


async def test_cold_customers_checked_together_share_one_read(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A burst of customers nobody checked lately (a restart, a wave of new ones) costs one
    query, not one per customer queued for the connection pool."""
    import asyncio

    from allotment.check.metrics import USAGE_READS

    checker = await _setup(client, admin, app)
    cache = checker.usage
    now = datetime.now(UTC)
    sent = [event(f"{k}-1", subject=k, data={"count": n}) for n, k in ((3, "acme"), (4, "globex"))]
    await ingest_at(app, sent, received=now)
    snapshots = [(await checker.snapshot(key, now))[0] for key in ("acme", "globex")]
    demand = USAGE_READS.labels("demand")
    before = demand._value.get()
    # One waiter gives up (its request was cancelled): the others still get the read.
    quitter = asyncio.ensure_future(cache.get(snapshots[0], now))
    waiting = [asyncio.ensure_future(cache.get(s, now)) for s in snapshots]
    await asyncio.sleep(0)
    quitter.cancel()
    found = await asyncio.gather(*waiting)
    assert [u.of("api_calls").month for u in found] == [3, 4]
    assert demand._value.get() - before == 1
    assert set(cache._entries) == {"acme", "globex"}
    # And the read's result was kept: the next checks wait on nothing.
    assert (await cache.get(snapshots[1], now)).of("api_calls").month == 4
    assert demand._value.get() - before == 1


async def test_an_unchanged_entry_is_renewed_in_place_and_aged_from_its_query(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A pass that waited for a pooled connection renews entries as of its query, not as of
    its wait: under load the wait would otherwise be counted against the 1 s bound twice
    (docs/performance.md, "The mixed batch's tail")."""
    import asyncio
    import contextlib
    import time

    checker = await _setup(client, admin, app)
    cache = checker.usage
    now = datetime.now(UTC)
    snapshot, _ = await checker.snapshot("acme", now)
    usage = await cache.get(snapshot, now)
    entry = _age(cache, "acme", cache.refresh_s)
    maker = cache.maker

    @contextlib.asynccontextmanager
    async def slow_pool() -> Any:  # a pool whose connections are all busy for 0.3 s
        await asyncio.sleep(0.3)
        async with maker() as session:
            yield session

    cache.maker = slow_pool
    try:
        started = time.monotonic()
        assert await cache.refresh(datetime.now(UTC)) == 1
    finally:
        cache.maker = maker
    assert cache._entries["acme"] is entry  # unchanged counters: the same entry, renewed
    assert entry.read_at >= started + 0.3
    assert (await cache.get(snapshot, now)) is usage


async def test_passes_start_on_a_cadence_whatever_they_take() -> None:
    """A pass that takes most of `refresh_s` is followed by the next one at once (with a
    fifth of `refresh_s` between them), not after another whole `refresh_s`."""
    import asyncio
    import time

    from allotment.check.meter_use import UsageCache

    starts: list[float] = []
    fourth = asyncio.Event()

    class Slow(UsageCache):
        async def refresh(self, now: datetime) -> int:
            starts.append(time.monotonic())
            if len(starts) == 4:
                fourth.set()
            await asyncio.sleep(0.4)
            return 0

    cache = Slow(maker=None, refresh_s=0.5)  # type: ignore[arg-type]
    cache.start()
    try:
        await asyncio.wait_for(fourth.wait(), 10)
    finally:
        await cache.stop()
    # On a cadence: 0.5 s from start to start (a pass of 0.4 s, then 0.1 s). Started after
    # each pass's end instead, they would be 0.9 s apart; the bound leaves the loop 0.3 s.
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(0.49 <= gap < 0.8 for gap in gaps), gaps


async def test_bases_read_together_come_due_spread_over_half_of_base_s(app: Any) -> None:
    """A wave of customers read whole together (a restart, the hour's turn) would come due
    for their next whole read in the same pass 30 s later; each counts as read up to half of
    `base_s` earlier, at random, never later than it was."""
    from allotment.check.meter_use import UsageCache

    cache = UsageCache(maker=None, base_s=30.0)  # type: ignore[arg-type]
    ages = [1000.0 - cache._base_age(1000.0) for _ in range(200)]
    assert all(0.0 <= age <= 15.0 for age in ages)
    assert len({round(age, 3) for age in ages}) > 150  # spread, not one instant
    assert max(ages) - min(ages) > 10.0
