from __future__ import annotations

import gc
import logging
from typing import Any

import httpx
import structlog
import structlog.testing

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


async def test_request_id_header_and_log_line(stores: Any) -> None:
    from allotment.kit import logs

    app = create_app(stores.settings(log_level="INFO"))  # the suite runs at WARNING
    try:
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as captured:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    fresh = await client.get("/healthz")
                    given = await client.get("/healthz", headers={"X-Request-Id": "trace-123"})
    finally:
        logs.configure("WARNING")
    assert fresh.headers["x-request-id"].startswith("req_")
    assert given.headers["x-request-id"] == "trace-123"
    access = [e for e in captured if e.get("event") == "request"]
    assert [e["request_id"] for e in access] == [fresh.headers["x-request-id"], "trace-123"]
    assert access[1]["status"] == 200 and access[1]["route"] == "/healthz"


def test_log_lines_are_json_with_request_id(tmp_path: Any) -> None:
    import json

    from allotment.kit import logs

    path = tmp_path / "log.jsonl"
    with path.open("w") as stream:
        logs.configure("INFO", json=True, stream=stream)
        structlog.contextvars.bind_contextvars(request_id="req_abc")
        structlog.get_logger("allotment.test").info("hello", answer=42)
        logging.getLogger("uvicorn.error").info("from %s", "stdlib")
        structlog.contextvars.clear_contextvars()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    logs.configure("WARNING")
    assert lines[0]["event"] == "hello" and lines[0]["request_id"] == "req_abc"
    assert lines[0]["logger"] == "allotment.test" and lines[0]["answer"] == 42
    assert lines[1]["event"] == "from stdlib" and lines[1]["request_id"] == "req_abc"


async def test_metrics_expose_latency_by_route(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await client.get("/v1/customers/acme", headers=admin)
    text = (await client.get("/metrics")).text
    assert (
        'allotment_request_seconds_count{method="GET",route="/v1/customers/{key}",status="404"}'
        in text
    )


def _gc_count(text: str, generation: int) -> float:
    prefix = f'allotment_gc_pause_seconds_count{{generation="{generation}"}} '
    return next(
        float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)
    )


async def test_metrics_time_every_garbage_collection(client: httpx.AsyncClient) -> None:
    """A collection stops the whole event loop, which no request histogram sees: each one is
    timed, by generation."""
    before = (await client.get("/metrics")).text
    gc.collect()
    gc.collect(0)
    after = (await client.get("/metrics")).text
    assert _gc_count(after, 2) >= _gc_count(before, 2) + 1
    assert _gc_count(after, 0) >= _gc_count(before, 0) + 1
