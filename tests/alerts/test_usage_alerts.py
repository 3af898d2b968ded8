"""usage.threshold_reached and usage.surge fire from ingestion, once per threshold and
period, and never otherwise."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.usage import service as usage
from allotment.usage.events import Window
from tests.factories.alerts import announced, fired
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import event, ingest_at, metered_document, send


@pytest.fixture
async def limited(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """acme with api_calls limited to 100 a month; a surge watch on storage."""
    document = metered_document()
    document["alerts"] = {
        "usage_thresholds": [80, 100],
        "usage_surge": {"storage": {"factor": 3, "window": "1h", "min": 50}},
    }
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    overrides = [{"meter": "api_calls", "limit": 100, "reason": "test"}]
    await create_contract(client, admin, customer="acme", plan="team", overrides=overrides)
    return "acme"


def calls(prefix: str, count: int, **fields: Any) -> dict[str, Any]:
    return event(prefix, data={"count": count}, **fields)


async def counted(client: httpx.AsyncClient, event_type: str) -> float:
    """allotment_alert_events_total for `event_type`, from GET /metrics."""
    prefix = f'allotment_alert_events_total{{type="{event_type}"}} '
    lines = (await client.get("/metrics")).text.splitlines()
    return next((float(line.removeprefix(prefix)) for line in lines if line.startswith(prefix)), 0)


async def test_thresholds_fire_once_each_as_use_crosses_them(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    metered = await counted(client, "usage.threshold_reached")
    assert (await send(client, backend, calls("a", 79))).status_code == 200
    assert await fired(app) == []  # 79 %: nothing
    await send(client, backend, calls("b", 1))  # 80 %
    first = await fired(app, "usage.threshold_reached")
    assert [(a["subject"], a["threshold"]) for a in first] == [("api_calls", "80")]
    assert first[0]["data"]["used"] == 80 and first[0]["data"]["limit"] == 100
    await send(client, backend, calls("c", 1))  # 81 %: again nothing
    await send(client, backend, calls("b", 1))  # a duplicate counts nothing
    assert len(await fired(app)) == 1
    await send(client, backend, calls("d", 30))  # 111 %: 100 crossed, once
    assert [a["threshold"] for a in await fired(app)] == ["80", "100"]
    assert await counted(client, "usage.threshold_reached") == metered + 2
    # A new month: the same thresholds fire again in their new period.
    later = utcnow().replace(day=1) + timedelta(days=40)
    await ingest_at(app, [calls("e", 85, time=later)], received=later)
    again = await fired(app, "usage.threshold_reached")
    assert [a["threshold"] for a in again] == ["80", "100", "80"]
    assert again[2]["period"] != again[0]["period"]


async def test_one_batch_crossing_both_fires_both(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    await send(client, backend, [calls("a", 50), calls("b", 60)])
    assert sorted(a["threshold"] for a in await fired(app)) == ["100", "80"]


async def test_a_consuming_check_crosses_thresholds_too(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    await send(client, backend, calls("a", 79))
    response = await client.post(
        "/v1/check", json={"customer": "acme", "feature": "api", "consume": 1}, headers=backend
    )
    assert response.json()["allowed"] is True, response.text
    assert [a["threshold"] for a in await fired(app)] == ["80"]


async def test_usage_surge_fires_when_the_window_outgrows_the_one_before(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    now = utcnow()
    before = now - timedelta(hours=1)
    stored = [event(f"s{i}", type="storage.used", data={"gb": 10}, time=before) for i in range(2)]
    await ingest_at(app, stored, received=now)
    # 20 in the hour before; now 40 (2×, and a rise of 20 < min): nothing.
    await ingest_at(app, [event("n1", type="storage.used", data={"gb": 40})], received=now)
    assert await fired(app, "usage.surge") == []
    # 70 (3.5×, a rise of 50): fires; more of the same in this window fires nothing more.
    await ingest_at(app, [event("n2", type="storage.used", data={"gb": 30})], received=now)
    await ingest_at(app, [event("n3", type="storage.used", data={"gb": 30})], received=now)
    surges = await fired(app, "usage.surge")
    assert len(surges) == 1
    assert surges[0]["data"]["used"] == 70 and surges[0]["data"]["baseline"] == 20


async def test_concurrent_batches_crossing_one_threshold_fire_it_once(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    await send(client, backend, calls("a", 70))
    # Each alone would cross 80 %; together they also reach 100 %.
    responses = await asyncio.gather(*(send(client, backend, calls(f"b{i}", 15)) for i in (1, 2)))
    assert all(r.status_code == 200 for r in responses)
    assert sorted(a["threshold"] for a in await fired(app)) == ["100", "80"]
    assert len(await announced(app, "usage.threshold_reached")) == 2


async def test_a_rolled_back_ingestion_announces_nothing(
    app: Any, client: httpx.AsyncClient, limited: str
) -> None:
    checker = app.state.checker

    async def snapshot_of(key: str) -> Any:
        return (await checker.snapshot(key, utcnow()))[0]

    with pytest.raises(RuntimeError):
        async with session_scope(app.state.sessionmaker) as session:
            await usage.ingest(
                session,
                raw_events=[calls("a", 90)],
                snapshot_of=snapshot_of,
                window=Window(now=utcnow(), late=timedelta(days=1), future=timedelta(days=1)),
                engine=app.state.engine,
                actor="test",
            )
            assert len(await _claimed(session)) == 1  # fired inside the transaction...
            raise RuntimeError("the caller fails before the commit")
    assert await fired(app) == []  # ...and gone with it
    assert await announced(app, "usage.threshold_reached") == []


async def _claimed(session: Any) -> list[Any]:
    return list((await session.execute(text("SELECT id FROM alerts_fired"))).all())
