from __future__ import annotations

import httpx

from tests.factories.customers import create_customer


async def test_create_get_list_customer(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = await create_customer(client, admin, key="acme", attributes={"region": "eu"})
    assert created["key"] == "acme" and created["revision"] == 1
    got = await client.get("/v1/customers/acme", headers=admin)
    assert got.status_code == 200
    assert got.json()["attributes"] == {"region": "eu"}
    assert got.headers["etag"] == '"1"'
    listed = await client.get("/v1/customers", headers=admin)
    assert [c["key"] for c in listed.json()["items"]] == ["acme"]
