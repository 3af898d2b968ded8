"""Devices per seat through the API: an instance registered under a subject needs that
subject's seat, at most `seats.devices_per_seat` of them are live, and releasing the seat
ends them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.licensing import licensing_document
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import assign, register


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """acme on `licensed`: two devices per seat, 20 instances."""
    await publish_policy(client, admin, licensing_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, plan="licensed", quantities={"seats": 5, "instances": 5})
    return "acme"


async def device(
    client: httpx.AsyncClient, backend: dict[str, str], fingerprint: str, subject: str, **more: Any
) -> httpx.Response:
    return await register(client, backend, fingerprint, subject=subject, **more)


async def test_a_device_needs_its_subjects_seat(
    client: httpx.AsyncClient, backend: dict[str, str], acme: str
) -> None:
    refused = await device(client, backend, "laptop-1", "ann")
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["type"].endswith("/seat-required")
    assert (problem["reason"], problem["subject"]) == ("seat_required", "ann")
    assert (await assign(client, backend, "ann")).status_code == 201
    made = await device(client, backend, "laptop-1", "ann")
    assert made.status_code == 201, made.text
    assert made.json()["subject"] == "ann"
    # an instance without a subject is no one's device, as before
    assert (await register(client, backend, "build-server")).status_code == 201


async def test_the_device_after_the_limit_is_refused_with_device_limit(
    client: httpx.AsyncClient, backend: dict[str, str], acme: str
) -> None:
    for subject in ("ann", "bob"):
        assert (await assign(client, backend, subject)).status_code == 201
    first = await device(client, backend, "ann-1", "ann")
    assert (await device(client, backend, "ann-2", "ann")).status_code == 201
    third = await device(client, backend, "ann-3", "ann")
    assert third.status_code == 409
    problem = third.json()
    assert problem["type"].endswith("/device-limit")
    assert (problem["reason"], problem["pool"], problem["limit"], problem["held"]) == (
        "device_limit",
        "devices",
        2,
        2,
    )
    assert problem["subject"] == "ann" and problem["frees_at"] is not None
    # a renewal is no new device; another holder has their own two
    assert (await device(client, backend, "ann-1", "ann")).status_code == 200
    assert (await device(client, backend, "bob-1", "bob")).status_code == 201
    # the same fingerprint under another subject is a different registration
    moved = await device(client, backend, "ann-1", "bob")
    assert moved.status_code == 409 and moved.json()["type"].endswith("/instance-changed")
    # deregistering one makes room
    gone = await client.delete(f"/v1/instances/{first.json()['id']}", headers=backend)
    assert gone.status_code == 204
    assert (await device(client, backend, "ann-3", "ann")).status_code == 201


async def test_releasing_the_seat_ends_its_devices(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], acme: str
) -> None:
    assert (await assign(client, backend, "ann")).status_code == 201
    laptop = (await device(client, backend, "laptop", "ann")).json()
    server = (await register(client, backend, "server")).json()
    released = await client.delete("/v1/customers/acme/seats/ann", headers=backend)
    assert released.status_code == 204
    live = (await client.get("/v1/customers/acme/instances", headers=backend)).json()["items"]
    assert [i["fingerprint"] for i in live] == ["server"]  # the unbound one stays
    beat = await client.post(f"/v1/instances/{laptop['id']}/heartbeat", headers=backend)
    assert beat.status_code == 410 and beat.json()["reason"] == "seat_released"
    audit = await client.get(f"/v1/audit?target=instance:acme/{laptop['id']}", headers=admin)
    assert [r["action"] for r in audit.json()["items"]][0] == "instance.seat_released"
    # the seat assigned again starts with no devices
    assert (await assign(client, backend, "ann")).status_code == 201
    assert (await device(client, backend, "laptop", "ann")).status_code == 201
    assert server["subject"] is None


async def test_a_plan_without_devices_per_seat_binds_devices_without_a_cap(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    await publish_policy(client, admin, licensing_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, plan="enterprise")
    assert (await assign(client, backend, "ann")).status_code == 201
    for n in range(4):
        assert (await device(client, backend, f"d{n}", "ann")).status_code == 201
    assert (await device(client, backend, "stranger", "zed")).status_code == 409


async def _instances_held(client: httpx.AsyncClient, backend: dict[str, str]) -> Any:
    got = await client.get("/v1/customers/acme/entitlements", headers=backend)
    assert got.status_code == 200, got.text
    return got.json()["limits"]["instances"]


async def test_devices_ended_by_a_release_or_an_erasure_no_longer_count_as_held(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], acme: str
) -> None:
    for subject in ("ann", "bob"):
        assert (await assign(client, backend, subject)).status_code == 201
        assert (await device(client, backend, f"{subject}-laptop", subject)).status_code == 201
    assert (await register(client, backend, "server")).status_code == 201
    before = await _instances_held(client, backend)  # the snapshot is cached from here on
    assert (before["count"], before["held"]) == (3, 3)
    released = await client.delete("/v1/customers/acme/seats/ann", headers=backend)
    assert released.status_code == 204
    after = await _instances_held(client, backend)
    assert (after["count"], after["held"], after["available"]) == (2, 2, before["available"] + 1)
    erased = await client.post("/v1/customers/acme/subjects/bob/erase", headers=admin)
    assert erased.status_code == 200 and erased.json()["devices_ended"] == 1, erased.text
    after = await _instances_held(client, backend)
    assert (after["count"], after["held"], after["available"]) == (1, 1, before["available"] + 2)
