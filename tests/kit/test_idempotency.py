from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select, text

from allotment.customers.models import Customer
from allotment.db import session_scope


async def _count_customers(app: Any) -> int:
    async with session_scope(app.state.sessionmaker) as session:
        return int((await session.execute(select(func.count()).select_from(Customer))).scalar_one())


async def test_retry_with_same_key_replays_first_response_and_creates_one_row(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    headers = {**admin, "Idempotency-Key": "create-acme-1"}
    body = {"key": "acme", "name": "Acme"}
    first = await client.post("/v1/customers", json=body, headers=headers)
    second = await client.post("/v1/customers", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert second.headers.get("idempotent-replayed") == "true"
    assert await _count_customers(app) == 1


async def test_same_key_different_body_is_422(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    headers = {**admin, "Idempotency-Key": "k1"}
    await client.post("/v1/customers", json={"key": "acme", "name": "Acme"}, headers=headers)
    other = await client.post("/v1/customers", json={"key": "beta", "name": "B"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")


async def test_key_in_flight_is_409(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await client.post(
        "/v1/api-keys", json={"name": "svc", "scopes": ["admin"]}, headers=admin
    )
    key_id, secret = created.json()["id"], created.json()["key"]
    # Another transaction holds the key's lock, exactly as a first request still running would.
    async with session_scope(app.state.sessionmaker) as holder:
        await holder.execute(text("SELECT allotment_idempotency_lock(:p, 'slow')"), {"p": key_id})
        response = await client.post(
            "/v1/customers",
            json={"key": "acme", "name": "Acme"},
            headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "slow"},
        )
        assert response.status_code == 409
        assert response.json()["type"].endswith("/idempotency-in-flight")
    assert await _count_customers(app) == 0


async def test_concurrent_duplicates_create_exactly_one(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    headers = {**admin, "Idempotency-Key": "race"}
    body = {"key": "acme", "name": "Acme"}
    responses = await asyncio.gather(
        *(client.post("/v1/customers", json=body, headers=headers) for _ in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}
    created = [r for r in responses if r.status_code == 201]
    assert len({r.content for r in created}) == 1
    assert await _count_customers(app) == 1


async def test_keys_are_scoped_to_the_api_key(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from tests.factories.auth import create_key

    other = await create_key(app, scopes=["admin"])
    one = await client.post(
        "/v1/customers", json={"key": "a", "name": "A"}, headers={**admin, "Idempotency-Key": "k"}
    )
    two = await client.post(
        "/v1/customers", json={"key": "b", "name": "B"}, headers={**other, "Idempotency-Key": "k"}
    )
    assert one.status_code == two.status_code == 201
    assert await _count_customers(app) == 2


async def test_failed_request_stores_nothing_so_a_retry_runs_again(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await client.post("/v1/customers", json={"key": "acme", "name": "A"}, headers=admin)
    headers = {**admin, "Idempotency-Key": "dup"}
    first = await client.post("/v1/customers", json={"key": "acme", "name": "A"}, headers=headers)
    assert first.status_code == 409
    await client.delete("/v1/customers/acme", headers=admin)
    retry = await client.post("/v1/customers", json={"key": "acme", "name": "A"}, headers=headers)
    assert retry.status_code == 201


async def test_expired_keys_are_purged(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from allotment.kit.idempotency import purge_expired

    await client.post(
        "/v1/customers", json={"key": "a", "name": "A"}, headers={**admin, "Idempotency-Key": "old"}
    )
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(
            text("UPDATE idempotency_keys SET expires_at = now() - interval '1 s'")
        )
        assert await purge_expired(session) == 1
