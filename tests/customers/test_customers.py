from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories.auth import create_key
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


async def test_duplicate_key_is_409(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_customer(client, admin, key="acme")
    again = await client.post("/v1/customers", json={"key": "acme", "name": "X"}, headers=admin)
    assert again.status_code == 409
    assert again.json()["type"].endswith("/customer-exists")


@pytest.mark.parametrize("key", ["Acme", "has space", "", "-lead", "x" * 65, "ünï", "a/b"])
async def test_invalid_keys_are_422_with_path(
    client: httpx.AsyncClient, admin: dict[str, str], key: str
) -> None:
    response = await client.post("/v1/customers", json={"key": key, "name": "X"}, headers=admin)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["path"] for e in response.json()["errors"]] == ["key"]


async def test_valid_key_characters(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_customer(client, admin, key="a-b_c.d9" + "x" * 56)


async def test_oversized_attributes_are_refused(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/customers",
        json={"key": "big", "name": "Big", "attributes": {"blob": "x" * 20_000}},
        headers=admin,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "attributes"


async def test_pagination_walks_every_customer_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    keys = [f"c{i:02d}" for i in range(7)]
    for key in reversed(keys):
        await create_customer(client, admin, key=key)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/customers", params=params, headers=admin)).json()
        seen += [c["key"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == keys and pages == 3


async def test_bad_cursor_is_400(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.get("/v1/customers?cursor=!!notours", headers=admin)
    assert response.status_code == 400


async def test_patch_bumps_revision_and_honours_if_match(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="acme", name="Acme")
    ok = await client.patch(
        "/v1/customers/acme", json={"name": "Acme Inc"}, headers={**admin, "If-Match": '"1"'}
    )
    assert ok.status_code == 200 and ok.json()["revision"] == 2 and ok.json()["name"] == "Acme Inc"
    assert ok.headers["etag"] == '"2"'
    stale = await client.patch(
        "/v1/customers/acme", json={"name": "Old"}, headers={**admin, "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["current_revision"] == 2
    assert (await client.get("/v1/customers/acme", headers=admin)).json()["name"] == "Acme Inc"


async def test_patch_rejects_unknown_fields(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="acme")
    response = await client.patch("/v1/customers/acme", json={"key": "other"}, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"path": "key", "message": "Unknown field"}]


async def test_delete_customer(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_customer(client, admin, key="acme")
    stale = await client.delete("/v1/customers/acme", headers={**admin, "If-Match": '"7"'})
    assert stale.status_code == 412
    assert (await client.delete("/v1/customers/acme", headers=admin)).status_code == 204
    assert (await client.get("/v1/customers/acme", headers=admin)).status_code == 404
    assert (await client.delete("/v1/customers/acme", headers=admin)).status_code == 404


async def test_customer_scoped_key_reads_only_its_customer(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="acme")
    await create_customer(client, admin, key="globex")
    own = await create_key(app, scopes=["customer:acme"])
    assert (await client.get("/v1/customers/acme", headers=own)).status_code == 200
    assert (await client.get("/v1/customers/globex", headers=own)).status_code == 403
    assert (await client.get("/v1/customers", headers=own)).status_code == 403
    patch = await client.patch("/v1/customers/acme", json={"name": "Mine"}, headers=own)
    assert patch.status_code == 403
