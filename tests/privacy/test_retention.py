"""Retention (docs/privacy.md): the worker purges exactly the decision records and raw events
older than their windows (a row at the cutoff is kept), and totals stay as they were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from allotment.worker import run_once

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
_DECISION = (
    "INSERT INTO decisions (id, at, customer, feature, allowed, reason, stale) "
    "VALUES (:id, :at, 'acme', 'sso', false, 'feature_not_in_plan', false)"
)
_EVENT = (
    "INSERT INTO usage_events (customer_id, tenant, type, source, id, time, data, received_at) "
    "VALUES (1, NULL, :type, 'tests', :id, :at, '{}'::jsonb, :at)"
)
_COUNTER = (
    "INSERT INTO usage_counters (customer_id, meter, hour, tenant, kind, value, events) "
    "VALUES (1, 'api_calls', :at, '', 'add', 5, 5)"
)


async def _ids(session: Any, sql: str) -> list[str]:
    return sorted((await session.execute(text(sql))).scalars().all())


async def test_the_worker_purges_exactly_what_is_older_than_each_window(
    app: Any, client: httpx.AsyncClient
) -> None:
    del client  # emptied the tables
    settings = app.state.settings.model_copy(
        update={"decisions_retention": timedelta(days=30), "events_retention": timedelta(days=400)}
    )
    tick = timedelta(microseconds=1)
    decided = NOW - timedelta(days=30)
    happened = NOW - timedelta(days=400)
    from allotment.usage import partitions

    await partitions.ensure(app.state.engine, {happened - timedelta(days=40), happened, NOW})
    async with session_scope(app.state.sessionmaker) as session:
        for name, at in (("old", decided - tick), ("edge", decided), ("new", NOW)):
            await session.execute(text(_DECISION), {"id": f"dec_{name}", "at": at})
        series = (
            ("a.oldest", "a", happened - timedelta(days=40)),
            ("a.old", "a", happened - tick),  # the newest before the cutoff: carried in
            ("a.edge", "a", happened),
            ("b.old", "b", happened - timedelta(days=1)),
            ("b.older", "b", happened - timedelta(days=2)),
        )
        for event_id, kind, at in series:
            await session.execute(text(_EVENT), {"type": kind, "id": event_id, "at": at})
        # c.late arrived after the cutoff (a read as of any instant since takes it off again,
        # and a unique meter is then counted from its month's events): its month is kept
        for event_id, at in (("c.old", happened - timedelta(days=2)), ("c.late", happened - tick)):
            await session.execute(text(_EVENT), {"type": "c", "id": event_id, "at": at})
        await session.execute(
            text("UPDATE usage_events SET received_at = :now WHERE id = 'c.late'"), {"now": NOW}
        )
        await session.execute(text(_COUNTER), {"at": happened - timedelta(hours=1)})
    done = await run_once(app.state.sessionmaker, now=NOW, settings=settings)
    assert (done["decisions_purged"], done["events_purged"]) == (1, 2)
    async with session_scope(app.state.sessionmaker) as session:
        assert await _ids(session, "SELECT id FROM decisions") == ["dec_edge", "dec_new"]
        kept = await _ids(session, "SELECT id FROM usage_events WHERE source = 'tests'")
        assert kept == ["a.edge", "a.old", "b.old", "c.late", "c.old"]
        counters = await _ids(session, "SELECT CAST(value AS text) FROM usage_counters")
        assert counters == ["5"]
    again = await run_once(app.state.sessionmaker, now=NOW, settings=settings)
    assert (again["decisions_purged"], again["events_purged"]) == (0, 0)
    later = await run_once(app.state.sessionmaker, now=NOW + tick, settings=settings)
    assert (later["decisions_purged"], later["events_purged"]) == (1, 1)  # the edges go next
