"""The broker path while NATS is unreachable, and what it refuses before publishing.

An app with ALLOTMENT_EVENTS_BROKER pointing at a closed port never connects: an event the
database could not store (a NUL) is still the direct path's 422, a valid one is a 503 that
says why, /readyz names the broker, and the lag's read age grows from the start
(docs/scale-out.md, "NATS JetStream").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog

from allotment.app import create_app
from tests.check.servers import free_port
from tests.factories.usage import BATCH, event


@pytest.fixture
async def broker_client(stores: Any, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the same stores whose broker never answers (a closed port)."""
    app = create_app(stores.settings(events_broker=f"nats://127.0.0.1:{free_port()}"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


NUL_EVENTS = {
    "id": event("a\u0000b"),
    "source": event("e-1", source="gw\u0000"),
    "data value": event("e-2", data={"count": 1, "note": "x\u0000"}),
    "data key": event("e-3", data={"count": 1, "\u0000": 2}),
    "nested data": event("e-4", data={"count": 1, "tags": [{"k": "\u0000"}]}),
    "extension": event("e-5", note="\u0000"),
}


@pytest.mark.parametrize("name", list(NUL_EVENTS))
async def test_a_nul_is_the_direct_paths_422_before_anything_is_published(
    name: str,
    metered: str,
    client: httpx.AsyncClient,
    broker_client: httpx.AsyncClient,
    backend: dict[str, str],
) -> None:
    # Without a broker the database refuses the value: that answer is the reference.
    body = NUL_EVENTS[name]
    direct = await client.post("/v1/events", json=body, headers=backend)
    assert direct.status_code == 422, direct.text
    for payload, headers in ((body, backend), ([event("ok-1"), body], {**backend, **BATCH_CT})):
        through = await broker_client.post("/v1/events", json=payload, headers=headers)
        assert through.status_code == 422, through.text  # not a 503: nothing was published
        assert through.json()["detail"] == direct.json()["detail"]
        assert through.json()["errors"] == direct.json()["errors"]


BATCH_CT = {"content-type": BATCH}


async def test_a_nul_in_a_rejected_event_does_not_refuse_the_batch(
    metered: str, broker_client: httpx.AsyncClient, backend: dict[str, str]
) -> None:
    # Rejected events are never stored, with or without a broker: the batch goes on (here
    # to a 503, the broker being down).
    bad = event("r-1", subject="nobody", data={"count": 1, "note": "\u0000"})
    response = await broker_client.post(
        "/v1/events", json=[bad, event("ok-2")], headers={**backend, **BATCH_CT}
    )
    assert response.status_code == 503, response.text


async def test_a_503_says_why_and_is_logged_once_per_interval(
    metered: str, broker_client: httpx.AsyncClient, backend: dict[str, str]
) -> None:
    with structlog.testing.capture_logs() as captured:
        answers = [
            await broker_client.post("/v1/events", json=event(f"w-{i}"), headers=backend)
            for i in range(5)
        ]
    for response in answers:
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert "not connected to NATS at nats://127.0.0.1:" in detail, detail
    refused = [e for e in captured if e["event"] == "events_unavailable"]
    assert len(refused) == 1 and refused[0]["log_level"] == "warning"
    assert refused[0]["broker"].startswith("nats://127.0.0.1:")


async def test_readyz_names_the_broker_down_and_why(broker_client: httpx.AsyncClient) -> None:
    async def down() -> dict[str, Any]:
        response = await broker_client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        checks: dict[str, Any] = response.json()["checks"]
        return checks

    checks = await down()
    assert checks["postgres"] == "ok" and checks["redis"] == "ok"
    assert checks["broker"].startswith("down: not connected to NATS at nats://127.0.0.1:")
    await asyncio.sleep(1.5)  # a connection attempt failed meanwhile: its error is the reason
    checks = await down()
    assert checks["broker"].startswith("down: not connected to NATS at nats://127.0.0.1:")
    assert checks["broker"].count(":") > 3, checks  # "…:<port>: <the error>"


async def test_readyz_without_a_broker_has_no_broker_check(client: httpx.AsyncClient) -> None:
    assert "broker" not in (await client.get("/readyz")).json()["checks"]


def _read_age(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("allotment_events_broker_lag_read_age_seconds "):
            return float(line.split()[1])
    raise AssertionError("no allotment_events_broker_lag_read_age_seconds")


async def test_the_lag_read_age_grows_from_the_start_when_never_read(
    broker_client: httpx.AsyncClient,
) -> None:
    first = _read_age((await broker_client.get("/metrics")).text)
    await asyncio.sleep(0.5)
    second = _read_age((await broker_client.get("/metrics")).text)
    assert 0 < first < second
    assert second - first >= 0.4
