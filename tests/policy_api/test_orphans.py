"""A publish (or rollback) that would orphan live contracts is refused unless forced.

See docs/policy.md#orphaned-contracts. Each test fails without the guard: publishing a
version that lacks what a live unpinned contract uses, or that lowers a pool below what it
holds now, used to succeed silently.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories.contracts import create_contract, days_from_now
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.factories.seats import assign
from tests.policy_api.helpers import audit_records


async def _draft(client: httpx.AsyncClient, admin: dict[str, str], document: dict) -> int:
    created = await client.post("/v1/policies", json=document, headers=admin)
    assert created.status_code == 201, created.text
    return int(created.json()["version"])


def _by_contract(orphaned: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["contract"]: entry for entry in orphaned}


@pytest.fixture
async def active(client: httpx.AsyncClient, admin: dict[str, str]) -> int:
    return await publish_policy(client, admin, demo_document())


async def test_a_publish_dropping_a_plan_addon_or_feature_in_use_is_409_naming_them(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await create_customer(client, admin, key="acme")
    on_starter = await create_contract(client, admin, customer="acme", plan="starter")
    await create_customer(client, admin, key="globex")  # scheduled: not in force yet
    with_addon = await create_contract(
        client,
        admin,
        customer="globex",
        plan="team",
        starts_at=days_from_now(10),
        addons=["audit_pack"],
        overrides=[{"feature": "priority_support", "action": "grant", "reason": "deal"}],
    )
    await create_customer(client, admin, key="initech")  # pinned: keeps its version
    await create_contract(client, admin, customer="initech", plan="starter", policy_version=active)
    document = demo_document()
    del document["plans"]["starter"]
    del document["addons"]["audit_pack"]
    del document["features"]["priority_support"]
    for plan in document["plans"].values():
        if "features" in plan and "priority_support" in plan["features"]:
            plan["features"].remove("priority_support")
    for addon in document["addons"].values():
        if "priority_support" in addon.get("features", []):
            addon["features"].remove("priority_support")
    version = await _draft(client, admin, document)

    refused = await client.post(f"/v1/policies/{version}/publish", headers=admin)

    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    body = refused.json()
    assert body["type"].endswith("/policy-orphans-contracts")
    orphaned = _by_contract(body["orphaned"])
    assert set(orphaned) == {on_starter["id"], with_addon["id"]}
    assert orphaned[on_starter["id"]]["customer"] == "acme"
    assert [p["path"] for p in orphaned[on_starter["id"]]["problems"]] == ["plan"]
    assert [p["path"] for p in orphaned[with_addon["id"]]["problems"]] == [
        "addons[0]",
        "overrides[0].feature",
    ]
    # Nothing moved: the active version is the same, the draft is still a draft.
    assert (await client.get("/v1/policies/active", headers=admin)).json()["version"] == active
    assert (await client.get(f"/v1/policies/{version}", headers=admin)).json()["status"] == "draft"

    # The dry-run names the same contracts, and why.
    report = (await client.post(f"/v1/policies/{version}/dry-run", headers=admin)).json()
    assert _by_contract(report["orphaned"]) == orphaned


async def test_a_lowered_seat_limit_below_what_is_held_orphans_the_contract(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, customer="acme", plan="team")
    for n in range(4):
        assert (await assign(client, admin, f"u{n}@acme.test")).status_code == 201
    tenant = await client.post(
        "/v1/customers/acme/tenants", json={"key": "eu", "quotas": {"seats": 5}}, headers=admin
    )
    assert tenant.status_code == 201, tenant.text
    document = demo_document()
    document["plans"]["team"]["seats"]["limit"] = 3  # 4 held; the tenant's quota is 5
    version = await _draft(client, admin, document)

    refused = await client.post(f"/v1/policies/{version}/publish", headers=admin)

    assert refused.status_code == 409, refused.text
    (entry,) = refused.json()["orphaned"]
    assert entry["contract"] == contract["id"]
    problems = {p["path"]: p["message"] for p in entry["problems"]}
    assert set(problems) == {"seats.limit", "tenants.quotas.seats"}
    assert "4" in problems["seats.limit"] and "3" in problems["seats.limit"]


async def test_a_forced_publish_goes_through_and_is_audited_with_what_it_orphaned(
    client: httpx.AsyncClient, admin: dict[str, str], active: int, app: Any
) -> None:
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, customer="acme", plan="starter")
    document = demo_document()
    del document["plans"]["starter"]
    version = await _draft(client, admin, document)

    forced = await client.post(f"/v1/policies/{version}/publish?force=true", headers=admin)

    assert forced.status_code == 200, forced.text
    record = (await audit_records(app, "policy.published"))[-1]
    assert record.after["forced"] is True
    assert record.after["orphaned"][0]["contract"] == contract["id"]
    assert record.after["orphaned"][0]["problems"][0]["path"] == "plan"
    assert record.actor


async def test_a_publish_that_orphans_nothing_is_not_forced(
    client: httpx.AsyncClient, admin: dict[str, str], active: int, app: Any
) -> None:
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    document = demo_document()
    del document["plans"]["starter"]  # nobody is on starter
    version = await _draft(client, admin, document)
    published = await client.post(f"/v1/policies/{version}/publish", headers=admin)
    assert published.status_code == 200, published.text
    assert "forced" not in (await audit_records(app, "policy.published"))[-1].after


async def test_a_rollback_is_guarded_the_same_way(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    document = demo_document()
    document["plans"]["premium"] = {"extends": "team", "features": ["+audit_log"]}
    newer = await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, customer="acme", plan="premium")

    refused = await client.post("/v1/policies/rollback", json={"to_version": active}, headers=admin)

    assert refused.status_code == 409, refused.text
    assert refused.json()["orphaned"][0]["contract"] == contract["id"]
    assert (await client.get("/v1/policies/active", headers=admin)).json()["version"] == newer
    forced = await client.post(
        "/v1/policies/rollback?force=true", json={"to_version": active}, headers=admin
    )
    assert forced.status_code == 200, forced.text
