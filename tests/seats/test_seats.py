"""Named seats through the API: assign, re-assign, release, list, guests, burst, tenants."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories.seats import assign, check


async def test_assign_returns_201_then_the_same_seat_with_200(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    first = await assign(client, backend, "ann")
    assert first.status_code == 201, first.text
    seat = first.json()
    assert seat["subject"] == "ann" and seat["type"] == "member" and seat["tenant"] is None
    assert seat["id"].startswith("seat_") and seat["over_limit"] is False and seat["burst"] is None
    again = await assign(client, backend, "ann")
    assert again.status_code == 200 and again.json()["id"] == seat["id"]
    listed = (await client.get("/v1/customers/acme/seats", headers=backend)).json()
    assert [s["subject"] for s in listed["items"]] == ["ann"]


async def test_seat_feature_needs_the_subject_to_hold_a_seat(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    assert (await check(client, backend, "editor"))["reason"] == "seat_required"
    assert (await check(client, backend, "editor", subject="ann"))["reason"] == "seat_required"
    await assign(client, backend, "ann")
    assert (await check(client, backend, "editor", subject="ann"))["allowed"] is True
    released = await client.delete("/v1/customers/acme/seats/ann", headers=backend)
    assert released.status_code == 204
    assert (await check(client, backend, "editor", subject="ann"))["reason"] == "seat_required"
    gone = await client.delete("/v1/customers/acme/seats/ann", headers=backend)
    assert gone.status_code == 404 and gone.json()["type"].endswith("/seat-not-found")


async def test_guest_unlocks_only_guest_features(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    guest = await assign(client, backend, "gus", type="guest")
    assert guest.status_code == 201 and guest.json()["type"] == "guest"
    assert (await check(client, backend, "viewer", subject="gus"))["allowed"] is True
    editor = await check(client, backend, "editor", subject="gus")
    assert editor["allowed"] is False and editor["reason"] == "guest_not_allowed"
    # Re-assigning as a member is a conflict, never a second seat.
    member = await assign(client, backend, "gus", type="member")
    assert member.status_code == 409 and member.json()["type"].endswith("/seat-held-differently")


async def test_guests_count_against_guests_not_the_paid_pool(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    for n in range(5):
        assert (await assign(client, backend, f"g{n}", type="guest")).status_code == 201
    refused = await assign(client, backend, "g5", type="guest")
    assert refused.status_code == 409
    body = refused.json()
    assert body["reason"] == "seat_limit_reached" and body["pool"] == "guests"
    assert body["limit"] == 5 and body["held"] == 5
    for n in range(10):  # the 10 member seats are all still free
        assert (await assign(client, backend, f"m{n}")).status_code == 201


async def _fill(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> None:
    for i in range(n):
        response = await assign(client, headers, f"u{i}")
        assert response.status_code == 201, response.text


async def test_burst_opens_over_the_limit_and_refuses_past_the_extra(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    await _fill(client, backend, 10)
    first = (await assign(client, backend, "b1")).json()
    assert first["over_limit"] is True and first["burst"]["extra_left"] == 1
    second = (await assign(client, backend, "b2")).json()
    assert second["burst"]["extra_left"] == 0
    assert second["burst"]["ends_at"] == first["burst"]["ends_at"]
    refused = await assign(client, backend, "b3")
    assert refused.status_code == 409
    body = refused.json()
    assert body["type"].endswith("/seat-limit-reached") and body["reason"] == "seat_limit_reached"
    assert body["limit"] == 10 and body["held"] == 12 and "frees_at" in body
    entitlements = (await client.get("/v1/customers/acme/entitlements", headers=backend)).json()
    seats = entitlements["limits"]["seats"]
    assert seats["limit"] == 10 and seats["held"] == 12 and seats["over_limit"] == 2


async def test_without_burst_a_full_pool_refuses(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    from tests.factories.seats import amend_seats

    await amend_seats(client, admin, limit=2, burst={"extra": 0})
    await _fill(client, backend, 2)
    refused = await assign(client, backend, "x")
    assert refused.status_code == 409 and refused.json()["held"] == 2


async def test_tenant_quota_caps_its_members(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    created = await client.post(
        "/v1/customers/acme/tenants", json={"key": "eu", "quotas": {"seats": 2}}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert (await assign(client, backend, "a", tenant="eu")).status_code == 201
    assert (await assign(client, backend, "b", tenant="eu")).status_code == 201
    refused = await assign(client, backend, "c", tenant="eu")
    assert refused.status_code == 409
    body = refused.json()
    assert body["reason"] == "tenant_quota_reached" and body["tenant"] == "eu"
    assert body["limit"] == 2 and body["held"] == 2
    assert (await assign(client, backend, "c")).status_code == 201  # outside the tenant: fine
    unknown = await assign(client, backend, "d", tenant="nope")
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["path"] == "tenant"


async def test_assignment_is_idempotent_by_key(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    headers = {**backend, "Idempotency-Key": "assign-ann-1"}
    first = await assign(client, headers, "ann")
    replay = await assign(client, headers, "ann")
    assert first.status_code == replay.status_code == 201
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.json() == first.json()
    other = await assign(client, headers, "bob")
    assert other.status_code == 422


async def test_no_contract_and_bad_bodies_are_clear_problems(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    from tests.factories.customers import create_customer

    await create_customer(client, admin, key="nocontract")
    none = await client.post(
        "/v1/customers/nocontract/seats", json={"subject": "a"}, headers=backend
    )
    assert none.status_code == 409 and none.json()["type"].endswith("/no-contract-in-force")
    ghost = await client.post("/v1/customers/ghost/seats", json={"subject": "a"}, headers=backend)
    assert ghost.status_code == 404
    bad: Any = await client.post(
        "/v1/customers/acme/seats", json={"subject": "", "type": "boss"}, headers=backend
    )
    assert bad.status_code == 422
    assert {e["path"] for e in bad.json()["errors"]} == {"subject", "type"}
    reader = await client.get("/v1/customers/acme/seats", headers=backend)
    assert reader.status_code == 200


async def test_a_tenant_holding_seats_cannot_be_deleted(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    await client.post("/v1/customers/acme/tenants", json={"key": "eu"}, headers=admin)
    assert (await assign(client, backend, "a", tenant="eu")).status_code == 201
    refused = await client.delete("/v1/customers/acme/tenants/eu", headers=admin)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/tenant-in-use")
    await client.delete("/v1/customers/acme/seats/a", headers=backend)
    assert (await client.delete("/v1/customers/acme/tenants/eu", headers=admin)).status_code == 204


async def test_allocations_are_counted_in_metrics(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    def granted(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('allotment_allocations_total{outcome="granted",pool="seats"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = granted((await client.get("/metrics")).text)
    await assign(client, backend, "ann")
    await assign(client, backend, "ann")  # already held: not a second grant
    assert granted((await client.get("/metrics")).text) == before + 1


async def test_a_subject_with_a_slash_is_released_raw_or_percent_encoded(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    """docs/seats.md allows "/" in a subject; its seat must be releasable (it used to be a
    404 'no route', the seat held against the limit for good)."""
    for subject, path in (("team/ann", "team/ann"), ("ops/bob/x", "ops%2Fbob%2Fx")):
        assert (await assign(client, backend, subject)).status_code == 201
        released = await client.delete(f"/v1/customers/acme/seats/{path}", headers=backend)
        assert released.status_code == 204, released.text
        gone = await client.delete(f"/v1/customers/acme/seats/{path}", headers=backend)
        assert gone.status_code == 404 and gone.json()["type"].endswith("/seat-not-found")
    listed = (await client.get("/v1/customers/acme/seats", headers=backend)).json()
    assert listed["items"] == []
