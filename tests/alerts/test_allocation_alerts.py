"""seats.limit_reached when an assignment takes a pool's last seat (the fast path and the
route), and instances.surge when registrations outgrow the baseline, with a controlled
clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from allotment.kit.clock import utcnow
from tests.factories.alerts import fired, register_at
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.factories.seats import amend_seats


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    document = demo_document()
    document["alerts"] = {"instance_surge": {"factor": 2, "window": "1m", "min": 5}}
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, plan="enterprise", seats={"limit": 3})
    return "acme"


async def assign(
    client: httpx.AsyncClient, backend: dict[str, str], subject: str, **body: Any
) -> httpx.Response:
    return await client.post(
        "/v1/customers/acme/seats", json={"subject": subject, **body}, headers=backend
    )


async def test_the_seat_that_fills_the_pool_fires_once(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], acme: str
) -> None:
    # The first assignment learns the limits (the route); the next ones take the fast path.
    for subject in ("ann", "bob"):
        assert (await assign(client, backend, subject)).status_code == 201
    assert await fired(app) == []
    assert (await assign(client, backend, "cid")).status_code == 201  # 3 of 3
    (full,) = await fired(app, "seats.limit_reached")
    assert full["data"] == {
        "customer": "acme",
        "pool": "members",
        "limit": 3,
        "held": 3,
        "subject": "cid",
    }
    # Held again, over the limit (a burst), released and refilled: no second alert.
    assert (await assign(client, backend, "cid")).status_code == 200
    assert (await assign(client, backend, "dan")).status_code == 201  # burst seat
    await client.delete("/v1/customers/acme/seats/dan", headers=backend)
    await client.delete("/v1/customers/acme/seats/cid", headers=backend)
    assert (await assign(client, backend, "eve")).status_code == 201
    assert len(await fired(app, "seats.limit_reached")) == 1


async def test_the_guest_pool_fills_on_the_general_path_too(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], acme: str
) -> None:
    for index in range(5):  # enterprise inherits team's 5 guests
        response = await assign(client, backend, f"g{index}", type="guest")
        assert response.status_code == 201, response.text
    (full,) = await fired(app, "seats.limit_reached")
    assert full["data"]["pool"] == "guests" and full["data"]["limit"] == 5


async def test_ten_instances_in_a_minute_against_two_is_a_surge_once(
    app: Any, client: httpx.AsyncClient, acme: str
) -> None:
    start = utcnow()
    for index in range(2):  # the baseline, a minute before
        await register_at(app, f"base-{index}", start - timedelta(seconds=90))
    for index in range(4):  # 6 live against 2: 3× but a rise of 4 < min 5
        await register_at(app, f"new-{index}", start + timedelta(seconds=index))
    assert await fired(app, "instances.surge") == []
    for index in range(4, 10):
        await register_at(app, f"new-{index}", start + timedelta(seconds=index))
    (surge,) = await fired(app, "instances.surge")
    assert surge["data"]["live"] == 7 and surge["data"]["baseline"] == 2
    assert surge["data"]["window"] == "1m" and surge["data"]["min"] == 5


async def test_a_slow_rise_is_no_surge(app: Any, client: httpx.AsyncClient, acme: str) -> None:
    start = utcnow()
    for index in range(12):  # one every 2 minutes: each window sees one more than before
        await register_at(app, f"slow-{index}", start + timedelta(minutes=2 * index))
    assert await fired(app, "instances.surge") == []


async def test_reconciliation_announces_seats_held_over_the_contract_once(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    finance: dict[str, str],
    acme: str,
) -> None:
    for subject in ("ann", "bob", "cid"):
        assert (await assign(client, backend, subject)).status_code == 201
    url = f"/v1/contracts/{(await _contract(client, admin))['id']}/reconciliation"
    period = {"period": utcnow().strftime("%Y-%m")}
    assert (await client.get(url, params=period, headers=finance)).status_code == 200
    assert await fired(app, "reconciliation.discrepancy") == []  # 3 of 3: within
    await amend_seats(client, admin, limit=2, burst={"extra": 0})
    for _ in range(2):
        assert (await client.get(url, params=period, headers=finance)).status_code == 200
    (found,) = await fired(app, "reconciliation.discrepancy")
    assert found["data"]["pool"] == "seats"
    assert found["data"]["limit"] == 2 and found["data"]["used"] == 3
    assert found["data"]["month"] == period["period"]


async def _contract(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/v1/customers/acme/contracts", headers=admin)
    return response.json()["items"][0]  # type: ignore[no-any-return]


async def test_the_session_that_takes_the_last_concurrent_seat_fires(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="globex", plan="floating", seats={"limit": 2})
    url = "/v1/customers/globex/sessions"
    assert (await client.post(url, json={"subject": "a"}, headers=backend)).status_code == 201
    assert await fired(app) == []
    assert (await client.post(url, json={"subject": "b"}, headers=backend)).status_code == 201
    (full,) = await fired(app, "seats.limit_reached")
    assert full["data"]["pool"] == "sessions" and full["data"]["subject"] == "b"
