"""A small world of two customers, built through the API, for tests that walk every route.

    acme     enterprise (named seats, instances): a seat, an instance, a tenant, usage
    globex   floating (concurrent seats): a session, an instance, a tenant, usage

Both run on the published demo catalog (version 1). `World` keeps the ids a test needs to
aim a request at one customer's objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from allotment.kit.clock import utcnow
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.factories.usage import event, send


@dataclass
class Tenancy:
    """One customer's objects."""

    key: str
    contract: str
    tenant: str
    instance: str
    seat_subject: str | None = None
    session: str | None = None


@dataclass
class World:
    policy_version: int
    customers: dict[str, Tenancy] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Tenancy:
        return self.customers[key]


async def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


async def build_world(client: httpx.AsyncClient, admin: dict[str, str]) -> World:
    """Publish the demo catalog and give acme and globex a contract and some state each."""
    world = World(policy_version=await publish_policy(client, admin, demo_document()))
    plans = {"acme": "enterprise", "globex": "floating"}
    for key, plan in plans.items():
        await create_customer(client, admin, key=key, name=key.title())
        contract = await create_contract(client, admin, customer=key, plan=plan)
        tenant = await _ok(
            await client.post(
                f"/v1/customers/{key}/tenants", json={"key": f"{key}-eu"}, headers=admin
            )
        )
        instance = await _ok(
            await client.post(
                f"/v1/customers/{key}/instances",
                json={"fingerprint": f"{key}-host-1", "kind": "vm"},
                headers=admin,
            )
        )
        tenancy = Tenancy(
            key=key, contract=contract["id"], tenant=tenant["key"], instance=instance["id"]
        )
        if plan == "floating":
            opened = await _ok(
                await client.post(
                    f"/v1/customers/{key}/sessions", json={"subject": f"bob@{key}"}, headers=admin
                )
            )
            tenancy.session = opened["id"]
        else:
            await _ok(
                await client.post(
                    f"/v1/customers/{key}/seats", json={"subject": f"ann@{key}"}, headers=admin
                )
            )
            tenancy.seat_subject = f"ann@{key}"
        ingested = await send(
            client, admin, [event(f"{key}-evt-{i}", subject=key, time=utcnow()) for i in range(3)]
        )
        assert ingested.status_code == 200 and ingested.json()["accepted"] == 3, ingested.text
        world.customers[key] = tenancy
    return world
