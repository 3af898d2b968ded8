"""Tenants: CRUD, and quotas that together fit the contract in force."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.factories.contracts import (
    create_contract,
    days_from_now,
    error_paths,
    state_version,
)
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy

BASE = "/v1/customers/acme/tenants"


@pytest.fixture
async def contract(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """acme on the demo team plan: 10 seats, 3 instance weight, api_calls 100,000/month."""
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    return await create_contract(client, admin, plan="team")


async def create_tenant(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    key: str,
    expect: int = 201,
    **quotas: Any,
) -> dict[str, Any]:
    response = await client.post(BASE, json={"key": key, "quotas": quotas}, headers=headers)
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_tenant_crud(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], contract: dict[str, Any]
) -> None:
    version = await state_version(app)
    created = await create_tenant(client, admin, "eu-prod", seats=4, meters={"api_calls": 500})
    assert created == {
        **created,
        "key": "eu-prod",
        "customer": "acme",
        "quotas": {"seats": 4, "instances": None, "meters": {"api_calls": 500}},
        "revision": 1,
    }
    assert await state_version(app) == version + 1
    await create_tenant(client, admin, "dev")

    got = await client.get(f"{BASE}/eu-prod", headers=admin)
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    listed = (await client.get(f"{BASE}?limit=1", headers=admin)).json()
    assert [t["key"] for t in listed["items"]] == ["dev"] and listed["next_cursor"]

    patched = await client.patch(
        f"{BASE}/eu-prod", json={"quotas": {"seats": 6}}, headers={**admin, "If-Match": '"1"'}
    )
    assert patched.status_code == 200
    assert patched.json()["quotas"] == {"seats": 6, "instances": None, "meters": {}}
    assert patched.json()["revision"] == 2 and patched.headers["etag"] == '"2"'
    stale = await client.patch(
        f"{BASE}/eu-prod", json={"quotas": {"seats": 1}}, headers={**admin, "If-Match": '"1"'}
    )
    assert stale.status_code == 412

    stale_delete = await client.delete(f"{BASE}/eu-prod", headers={**admin, "If-Match": '"1"'})
    assert stale_delete.status_code == 412
    assert (await client.delete(f"{BASE}/eu-prod", headers=admin)).status_code == 204
    assert (await client.get(f"{BASE}/eu-prod", headers=admin)).status_code == 404
    assert (await client.delete(f"{BASE}/eu-prod", headers=admin)).status_code == 404

    records = (await client.get("/v1/audit?target=tenant:acme/eu-prod", headers=admin)).json()
    actions = [r["action"] for r in reversed(records["items"])]
    assert actions == ["tenant.created", "tenant.updated", "tenant.deleted"]
    updated = records["items"][1]
    assert updated["before"]["quotas"]["seats"] == 4 and updated["after"]["quotas"]["seats"] == 6


async def test_duplicate_and_invalid_keys(
    client: httpx.AsyncClient, admin: dict[str, str], contract: dict[str, Any]
) -> None:
    await create_tenant(client, admin, "dev")
    duplicate = await create_tenant(client, admin, "dev", expect=409)
    assert duplicate["type"].endswith("/tenant-exists")
    bad = await create_tenant(client, admin, "Has Space", expect=422)
    assert error_paths(bad) == ["key"]
    negative = await create_tenant(client, admin, "neg", expect=422, seats=-1)
    assert error_paths(negative) == ["quotas.seats"]


async def test_a_tenant_needs_a_contract_in_force(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    body = await create_tenant(client, admin, "dev", expect=409)
    assert body["type"].endswith("/no-contract-in-force")
    await create_contract(client, admin, starts_at=days_from_now(10))  # scheduled is not enough
    await create_tenant(client, admin, "dev", expect=409)
    assert (
        await client.post("/v1/customers/nobody/tenants", json={"key": "x"}, headers=admin)
    ).status_code == 404


async def test_seat_quotas_may_not_total_more_than_the_contract(
    client: httpx.AsyncClient, admin: dict[str, str], contract: dict[str, Any]
) -> None:
    await create_tenant(client, admin, "a", seats=6)
    body = await create_tenant(client, admin, "b", expect=422, seats=8)
    assert body["errors"] == [
        {
            "path": "quotas.seats",
            "message": "seat quotas would total 14, 4 over the contract's limit of 10",
        }
    ]
    assert "14, 4 over" in body["detail"]
    await create_tenant(client, admin, "b", seats=4)  # exactly the limit fits
    # an update is summed with the others, not with its own old quota
    grow = await client.patch(f"{BASE}/a", json={"quotas": {"seats": 7}}, headers=admin)
    assert grow.status_code == 422
    assert grow.json()["errors"][0]["message"].startswith("seat quotas would total 11, 1 over")
    shrink = await client.patch(f"{BASE}/a", json={"quotas": {"seats": 5}}, headers=admin)
    assert shrink.status_code == 200


async def test_instance_and_meter_quotas(
    client: httpx.AsyncClient, admin: dict[str, str], contract: dict[str, Any]
) -> None:
    await create_tenant(client, admin, "a", instances=2, meters={"api_calls": 60_000})
    body = await create_tenant(
        client, admin, "b", expect=422, instances=2, meters={"api_calls": 60_000, "exports": 10}
    )
    assert body["errors"] == [
        {
            "path": "quotas.instances",
            "message": "instance quotas would total 4, 1 over the contract's limit of 3",
        },
        {
            "path": "quotas.meters.api_calls",
            "message": "api_calls quotas would total 120000, 20000 over the contract's limit "
            "of 100000",
        },
    ]
    unknown = await create_tenant(client, admin, "c", expect=422, meters={"downloads": 5})
    assert error_paths(unknown) == ["quotas.meters.downloads"]
    assert "no meter 'downloads'" in unknown["errors"][0]["message"]


async def test_quotas_follow_the_contract_and_its_overrides(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(
        client,
        admin,
        plan="starter",  # 3 seats, no instance pool, exports 50/month
        seats={"limit": 5},
        overrides=[{"meter": "exports", "limit": 80, "reason": "launch"}],
    )
    await create_tenant(client, admin, "a", seats=5, meters={"exports": 80})
    no_pool = await create_tenant(client, admin, "b", expect=422, instances=1)
    assert no_pool["errors"] == [
        {
            "path": "quotas.instances",
            "message": "the contract has no instance pool to carve a quota from",
        }
    ]
    # a meter the contract does not limit can be given any quota
    await create_tenant(client, admin, "c", meters={"api_calls": 10**6})


async def test_an_amendment_must_leave_room_for_the_quotas(
    client: httpx.AsyncClient, admin: dict[str, str], contract: dict[str, Any]
) -> None:
    await create_tenant(client, admin, "a", seats=8)
    url = f"/v1/contracts/{contract['id']}"
    shrink = await client.patch(
        url, json={"seats": {"limit": 5}}, headers={**admin, "If-Match": '"1"'}
    )
    assert shrink.status_code == 422
    assert shrink.json()["errors"] == [
        {
            "path": "seats.limit",
            "message": "the tenants' seat quotas total 8, 3 over the amended limit of 5; "
            "lower their quotas first",
        }
    ]
    fits = await client.patch(
        url, json={"seats": {"limit": 8}}, headers={**admin, "If-Match": '"1"'}
    )
    assert fits.status_code == 200


async def test_concurrent_tenants_never_overrun_the_pool(
    client: httpx.AsyncClient, admin: dict[str, str], contract: dict[str, Any]
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(BASE, json={"key": f"t{i}", "quotas": {"seats": 3}}, headers=admin)
            for i in range(10)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 3 + [422] * 7  # 3 × 3 seats fit in 10; a fourth would not
    listed = (await client.get(BASE, headers=admin)).json()["items"]
    assert sum(t["quotas"]["seats"] for t in listed) == 9


async def test_tenant_reads_and_scopes(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], contract: dict[str, Any]
) -> None:
    from tests.factories.auth import create_key

    await create_tenant(client, admin, "dev", seats=1)
    own = await create_key(app, scopes=["customer:acme"])
    check = await create_key(app, scopes=["check"])
    assert (await client.get(f"{BASE}/dev", headers=own)).status_code == 200
    assert (await client.get(BASE, headers=check)).status_code == 200
    refused = await client.patch(f"{BASE}/dev", json={"quotas": {}}, headers=own)
    assert refused.status_code == 403
