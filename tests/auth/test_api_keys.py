from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
from sqlalchemy import select

from allotment.app import create_app
from allotment.auth.models import ApiKey
from allotment.db import session_scope
from tests.factories.auth import bearer


async def test_created_key_is_shown_once_and_stored_only_hashed(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/api-keys", json={"name": "backend", "scopes": ["check"]}, headers=admin
    )
    assert response.status_code == 201
    body = response.json()
    secret = body["key"]
    assert secret.startswith("alm_") and len(secret) > 40
    assert body["prefix"] == secret[:12]
    async with session_scope(app.state.sessionmaker) as session:
        stored = (await session.execute(select(ApiKey).where(ApiKey.id == body["id"]))).scalar_one()
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(stored.__dict__)
    listed = (await client.get("/v1/api-keys", headers=admin)).json()
    assert all("key" not in item for item in listed["items"])
    assert secret not in str(listed)


async def test_key_works_for_its_scope(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = await client.post(
        "/v1/api-keys", json={"name": "fin", "scopes": ["finance"]}, headers=admin
    )
    finance = bearer(created.json()["key"])
    assert (await client.get("/v1/customers", headers=finance)).status_code == 200
    assert (await client.get("/v1/api-keys", headers=finance)).status_code == 403


async def test_unknown_scope_is_rejected(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(
        "/v1/api-keys", json={"name": "x", "scopes": ["root", "customer:Bad Key"]}, headers=admin
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "scopes"


async def test_revoked_key_stops_working_at_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = (
        await client.post("/v1/api-keys", json={"name": "tmp", "scopes": ["admin"]}, headers=admin)
    ).json()
    temp = bearer(created["key"])
    assert (await client.get("/v1/customers", headers=temp)).status_code == 200  # now cached
    assert (await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)).status_code == 204
    response = await client.get("/v1/customers", headers=temp)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_revocation_reaches_another_worker_through_redis(
    stores: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = (
        await client.post("/v1/api-keys", json={"name": "tmp", "scopes": ["admin"]}, headers=admin)
    ).json()
    temp = bearer(created["key"])
    # A second app instance is a second worker: its own caches, same PostgreSQL and Redis.
    other = create_app(stores.settings(auth_cache_ttl_s=300))
    async with other.router.lifespan_context(other):
        for _ in range(50):
            if other.state.bus.connected:
                break
            await asyncio.sleep(0.02)
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://w2") as worker2:
            assert (await worker2.get("/v1/customers", headers=temp)).status_code == 200
            await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)
            status = 200
            for _ in range(100):  # well within 1 s, despite the 300 s cache TTL
                status = (await worker2.get("/v1/customers", headers=temp)).status_code
                if status == 401:
                    break
                await asyncio.sleep(0.01)
            assert status == 401


async def test_revoking_unknown_key_is_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.delete("/v1/api-keys/key_missing", headers=admin)
    assert response.status_code == 404
    assert response.json()["status"] == 404
