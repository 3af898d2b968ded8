"""The decision log: denials always, allows sampled, bounded, written in batches."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from allotment.check.decisions import DecisionLog, DecisionRecord
from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.kit.ids import new_id


def _row(allowed: bool) -> dict[str, Any]:
    return {
        "id": new_id("dec"),
        "at": utcnow(),
        "customer": "acme",
        "feature": "reports",
        "subject": None,
        "instance": None,
        "tenant": None,
        "allowed": allowed,
        "reason": "ok" if allowed else "feature_not_in_plan",
        "detail": None,
        "policy_version": 1,
        "contract_revision": 1,
        "stale": False,
    }


async def _count(app: Any) -> int:
    async with session_scope(app.state.sessionmaker) as session:
        return int(
            (await session.execute(select(func.count()).select_from(DecisionRecord))).scalar_one()
        )


async def test_overflow_drops_records_and_counts_them(app: Any, client: httpx.AsyncClient) -> None:
    log = DecisionLog(app.state.sessionmaker, sample_rate=1.0, capacity=100, batch_size=1000)
    for _ in range(250):
        log.record(_row(False))
    assert log.dropped == 150
    await log.flush()
    assert await _count(app) == 100


async def test_a_full_queue_is_not_wanted_and_the_drop_is_counted(app: Any) -> None:
    log = DecisionLog(app.state.sessionmaker, sample_rate=1.0, capacity=3)
    for _ in range(3):
        assert log.wants(False)
        log.record(_row(False))
    assert not log.wants(False)
    assert not log.wants(True)
    assert log.dropped == 2


async def test_denials_are_always_wanted_and_allows_sampled(app: Any) -> None:
    never = DecisionLog(app.state.sessionmaker, sample_rate=0.0)
    always = DecisionLog(app.state.sessionmaker, sample_rate=1.0)
    assert all(never.wants(False) for _ in range(100))
    assert not any(never.wants(True) for _ in range(100))
    assert all(always.wants(True) for _ in range(100))


async def test_background_writer_flushes_without_being_asked(
    app: Any, client: httpx.AsyncClient
) -> None:
    import asyncio

    log = DecisionLog(app.state.sessionmaker, sample_rate=1.0, interval_s=0.05)
    await log.start()
    try:
        for _ in range(10):
            log.record(_row(False))
        for _ in range(100):
            if await _count(app) == 10:
                break
            await asyncio.sleep(0.05)
    finally:
        await log.stop()
    assert await _count(app) == 10


async def test_outage_drops_the_batch_never_raises(stores: Any) -> None:
    from allotment.db import create_engine, create_sessionmaker

    engine = create_engine("postgresql://postgres@127.0.0.1:1/none", stores.settings())
    log = DecisionLog(create_sessionmaker(engine), sample_rate=1.0)
    for _ in range(5):
        log.record(_row(False))
    await log.flush()
    await engine.dispose()
    assert log.dropped == 5
