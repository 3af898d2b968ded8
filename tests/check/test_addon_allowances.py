"""Add-on allowances enforced by real checks: an add-on that raises a meter limit, the seat
limit or the instance limit lets the customer who bought it past the plan's limit (by the
raise × the quantity bought) and no further; a customer without it stops at the plan's.
Through the HTTP API, with the embedded PostgreSQL and Redis."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories.contracts import create_contract, error_paths
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import assign, check, register
from tests.factories.usage import metered_document


def boosted_document() -> dict[str, Any]:
    """The demo catalog (team: api_calls limited to 100,000 a month, hard; 10 seats with a
    burst of 2; instance weight 3) and an add-on that raises each."""
    document = metered_document()
    document["addons"]["growth_pack"] = {
        "price": "40.00",
        "raises": {"limits": {"api_calls": 50_000}, "seats": 5, "instances": 2},
    }
    return document


@pytest.fixture
async def customers(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """acme bought growth_pack twice, globex did not; both on team."""
    await publish_policy(client, admin, boosted_document())
    for key in ("acme", "globex"):
        await create_customer(client, admin, key=key)
    await create_contract(
        client, admin, customer="acme", addons=[{"name": "growth_pack", "quantity": 2}]
    )
    await create_contract(client, admin, customer="globex")


async def _consume(client: httpx.AsyncClient, headers: dict[str, str], customer: str, n: int):
    response = await client.post(
        "/v1/check", json={"customer": customer, "feature": "api", "consume": n}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_addon_raises_the_meter_limit_a_check_enforces(
    client: httpx.AsyncClient, backend: dict[str, str], customers: None
) -> None:
    # team's limit is 100,000; growth_pack × 2 adds 100,000 for acme.
    denied = await _consume(client, backend, "globex", 150_000)
    assert denied["allowed"] is False and denied["reason"] == "usage_limit_reached"
    assert denied["limit"]["limit"] == 100_000
    allowed = await _consume(client, backend, "acme", 150_000)
    assert allowed["allowed"] is True and allowed["consumed"] == 150_000
    assert allowed["limit"]["limit"] == 200_000 and allowed["limit"]["remaining"] == 50_000
    past = await _consume(client, backend, "acme", 50_001)  # one past the raised limit
    assert past["allowed"] is False and past["reason"] == "usage_limit_reached"
    assert (await _consume(client, backend, "acme", 50_000))["allowed"] is True
    entitlements = await client.get("/v1/customers/acme/entitlements", headers=backend)
    assert entitlements.json()["limits"]["meters"]["api_calls"]["limit"] == 200_000


async def test_an_addon_raises_the_seat_limit_assignments_enforce(
    client: httpx.AsyncClient, backend: dict[str, str], customers: None
) -> None:
    # team: 10 seats and a burst of 2 → globex stops at 12, acme (10 + 2 × 5 = 20) at 22.
    for n in range(12):
        assert (await assign(client, backend, f"g{n}", customer="globex")).status_code == 201
    assert (await assign(client, backend, "g12", customer="globex")).status_code == 409
    for n in range(22):
        assert (await assign(client, backend, f"a{n}", customer="acme")).status_code == 201, n
    refused = await assign(client, backend, "a22", customer="acme")
    assert refused.status_code == 409 and refused.json()["limit"] == 20
    decision = await check(client, backend, "editor", customer="acme", subject="a19")
    assert decision["allowed"] is True


async def test_an_addon_raises_the_instance_limit_registrations_enforce(
    client: httpx.AsyncClient, backend: dict[str, str], customers: None
) -> None:
    # team: weight 3 → globex registers 3 VMs; acme (3 + 2 × 2 = 7) registers 7.
    for n in range(3):
        assert (await register(client, backend, f"g{n}", customer="globex")).status_code == 201
    assert (await register(client, backend, "g3", customer="globex")).status_code == 409
    for n in range(7):
        assert (await register(client, backend, f"a{n}", customer="acme")).status_code == 201
    assert (await register(client, backend, "a7", customer="acme")).status_code == 409


async def test_removing_the_addon_takes_the_allowance_back(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], customers: None
) -> None:
    contract = (await client.get("/v1/customers/acme/contracts", headers=admin)).json()["items"][0]
    amended = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"addons": []},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert amended.status_code == 200, amended.text
    denied = await _consume(client, backend, "acme", 150_000)
    assert denied["allowed"] is False and denied["limit"]["limit"] == 100_000


async def test_a_quantity_on_an_addon_a_quantity_cannot_change_is_a_422(
    client: httpx.AsyncClient, admin: dict[str, str], customers: None
) -> None:
    document = boosted_document()
    document["addons"]["upkeep"] = {"percent": 20, "of": ["base", "seats"]}
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="initech")
    response = await create_contract(
        client,
        admin,
        customer="initech",
        expect=422,
        addons=["growth_pack", {"name": "upkeep", "quantity": 2}],
    )
    assert error_paths(response) == ["addons[1].quantity"]
