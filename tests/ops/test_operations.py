from __future__ import annotations

import logging
from typing import Any

import httpx

from allotment.app import create_app


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_ok_when_both_stores_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok"}


async def _readyz_with(settings: Any) -> httpx.Response:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/readyz")


async def test_readyz_503_when_redis_is_down(stores: Any) -> None:
    response = await _readyz_with(stores.settings(redis_url="redis://127.0.0.1:1/0"))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    checks = response.json()["checks"]
    assert checks["postgres"] == "ok" and checks["redis"].startswith("down")


async def test_readyz_503_when_postgres_is_down(stores: Any) -> None:
    response = await _readyz_with(
        stores.settings(database_url="postgresql://postgres@127.0.0.1:1/none")
    )
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["redis"] == "ok" and checks["postgres"].startswith("down")


async def test_writes_answer_503_with_retry_after_when_postgres_is_down(stores: Any) -> None:
    app = create_app(stores.settings(database_url="postgresql://postgres@127.0.0.1:1/none"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/v1/customers",
                json={"key": "a", "name": "A"},
                headers={"Authorization": "Bearer alm_whatever"},
            )
    assert response.status_code == 503
    assert response.headers["retry-after"]


async def test_request_id_header_and_log_line(client: httpx.AsyncClient, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="allotment.access"):
        fresh = await client.get("/healthz")
        given = await client.get("/healthz", headers={"X-Request-Id": "trace-123"})
    assert fresh.headers["x-request-id"].startswith("req_")
    assert given.headers["x-request-id"] == "trace-123"
    events = [r.msg for r in caplog.records if r.name == "allotment.access"]
    assert any(isinstance(e, dict) and e.get("request_id") == "trace-123" for e in events)


async def test_metrics_expose_latency_by_route(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await client.get("/v1/customers/acme", headers=admin)
    text = (await client.get("/metrics")).text
    assert (
        'allotment_request_seconds_count{method="GET",route="/v1/customers/{key}",status="404"}'
        in text
    )
