"""Recording contracts: kinds, validation against the catalog, pinning, the overlap rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from allotment.contracts import service as contracts
from allotment.db import session_scope
from tests.factories.auth import create_key
from tests.factories.contracts import (
    create_contract,
    customer_id,
    days_from_now,
    error_paths,
    iso,
    state_version,
)
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy

# -- kinds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("standard", {}),
        ("trial", {"ends_at": days_from_now(14)}),
        ("educational", {"ends_at": days_from_now(365), "discount_percent": 40}),
        ("pilot", {"ends_at": days_from_now(90), "discount_percent": "100"}),
    ],
)
async def test_create_each_kind(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str, kind: str, extra: dict[str, Any]
) -> None:
    created = await create_contract(client, admin, kind=kind, **extra)
    assert created["kind"] == kind and created["status"] == "active"
    assert created["id"].startswith("ctr_") and created["customer"] == "acme"
    assert created["revision"] == 1
    if "discount_percent" in extra:
        assert created["discount_percent"] == f"{float(extra['discount_percent']):.2f}"
    else:
        assert created["discount_percent"] is None
    got = await client.get(f"/v1/contracts/{created['id']}", headers=admin)
    assert got.status_code == 200 and got.json() == created
    assert got.headers["etag"] == '"1"'


@pytest.mark.parametrize(
    ("kind", "extra", "paths"),
    [
        ("trial", {}, ["ends_at"]),
        ("educational", {"ends_at": days_from_now(30)}, ["discount_percent"]),
        ("pilot", {"discount_percent": 20}, ["ends_at"]),
        ("standard", {"discount_percent": 20}, ["discount_reason"]),
        ("trial", {"ends_at": days_from_now(9), "discount_percent": 20}, ["discount_percent"]),
        ("trial", {"ends_at": days_from_now(-2)}, ["ends_at"]),  # before starts_at
    ],
)
async def test_kind_rules_are_422_with_paths(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    acme: str,
    kind: str,
    extra: dict[str, Any],
    paths: list[str],
) -> None:
    response = await create_contract(client, admin, kind=kind, expect=422, **extra)
    assert error_paths(response) == paths


@pytest.mark.parametrize(
    ("fields", "paths"),
    [
        ({"kind": "rental"}, ["kind"]),
        (
            {"discount_percent": 0, "kind": "pilot", "ends_at": days_from_now(9)},
            ["discount_percent"],
        ),
        (
            {"discount_percent": 101, "kind": "pilot", "ends_at": days_from_now(9)},
            ["discount_percent"],
        ),
        (  # a JSON fraction is a float: a fractional percent is written "12.5"
            {"discount_percent": 12.5, "kind": "pilot", "ends_at": days_from_now(9)},
            ["discount_percent"],
        ),
        ({"starts_at": "2026-01-01T00:00:00"}, ["starts_at"]),  # no timezone
        ({"seats": {"limit": -1}}, ["seats.limit"]),
        ({"overrides": [{"feature": "sso", "reason": "x"}]}, ["overrides[0]"]),
        ({"overrides": [{"feature": "sso", "action": "grant"}]}, ["overrides[0].reason"]),
        (
            {"overrides": [{"meter": "api_calls", "action": "grant", "reason": "x"}]},
            ["overrides[0]"],
        ),
        ({"unknown": 1}, ["unknown"]),
    ],
)
async def test_shape_errors_are_422_with_paths(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    acme: str,
    fields: dict[str, Any],
    paths: list[str],
) -> None:
    body = await create_contract(client, admin, expect=422, **fields)
    assert error_paths(body) == paths


# -- the catalog -----------------------------------------------------------------------------


async def test_plan_addons_features_and_meters_are_checked_against_the_catalog(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str, policy: int
) -> None:
    body = await create_contract(
        client,
        admin,
        plan="platinum",
        addons=["audit_pack", "jetpack"],
        overrides=[
            {"feature": "teleport", "action": "grant", "reason": "deal"},
            {"meter": "api_calls", "limit": 10, "reason": "cap"},
            {"meter": "downloads", "limit": 10, "reason": "cap"},
        ],
        expect=422,
    )
    assert error_paths(body) == [
        "plan",
        "addons[1]",
        "overrides[0].feature",
        "overrides[2].meter",
    ]
    assert f"policy version {policy}" in body["errors"][0]["message"]


async def test_seats_and_instances_default_to_the_plan(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    created = await create_contract(client, admin, plan="enterprise", ends_at=days_from_now(300))
    assert created["seats"] is None and created["instances"] is None
    assert created["addons"] == [] and created["overrides"] == []
    sized = await create_contract(
        client,
        admin,
        customer="acme",
        starts_at=days_from_now(400),
        seats={"limit": 250, "burst": {"extra": 20, "window": "48h"}},
        instances={"limit": 40},
    )
    assert sized["seats"] == {"limit": 250, "burst": {"extra": 20, "window": "2d"}}
    assert sized["instances"] == {"limit": 40}
    assert sized["status"] == "scheduled"


async def test_attributes_are_the_plans_with_the_requests_on_top(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    created = await create_contract(
        client, admin, plan="team", attributes={"region": "eu", "support_level": "premium"}
    )
    assert created["attributes"] == {
        "edition": "team",
        "support_level": "premium",
        "region": "eu",
    }


async def test_no_published_policy_is_409(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_customer(client, admin, key="acme")
    body = await create_contract(client, admin, expect=409)
    assert body["type"].endswith("/no-published-policy")
    assert "publish" in body["detail"].lower()


async def test_a_pinned_version_validates_and_stays_pinned(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str, policy: int
) -> None:
    document = demo_document()
    document["plans"].pop("floating")
    newer = await publish_policy(client, admin, document)
    assert newer != policy
    # the active version no longer has `floating`; the pinned one does
    unpinned = await create_contract(client, admin, plan="floating", expect=422)
    assert error_paths(unpinned) == ["plan"]
    pinned = await create_contract(client, admin, plan="floating", policy_version=policy)
    assert pinned["policy_version"] == policy

    await create_customer(client, admin, key="globex")
    missing = await create_contract(
        client, admin, customer="globex", policy_version=999, expect=422
    )
    assert error_paths(missing) == ["policy_version"]
    draft_document = demo_document()
    draft_document["currency"] = "EUR"
    draft = await client.post("/v1/policies", json=draft_document, headers=admin)
    draft_version = draft.json()["version"]
    as_draft = await create_contract(
        client, admin, customer="globex", policy_version=draft_version, expect=422
    )
    assert error_paths(as_draft) == ["policy_version"]


async def test_starts_at_may_lie_in_the_past(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    starts = days_from_now(-200)
    old = await create_contract(client, admin, starts_at=starts, ends_at=days_from_now(-20))
    assert old["status"] == "expired"
    assert old["effective_at"] == starts  # revision 1 takes effect when the term starts
    revisions = (await client.get(f"/v1/contracts/{old['id']}/revisions", headers=admin)).json()
    assert [(r["revision"], r["effective_at"]) for r in revisions["items"]] == [(1, starts)]


async def test_unknown_customer_and_contract_are_404(
    client: httpx.AsyncClient, admin: dict[str, str], policy: int
) -> None:
    assert (await create_contract(client, admin, customer="nobody", expect=404))["type"].endswith(
        "/customer-not-found"
    )
    missing = await client.get("/v1/contracts/ctr_nope", headers=admin)
    assert missing.status_code == 404 and missing.json()["type"].endswith("/contract-not-found")


# -- at most one contract in force -----------------------------------------------------------


async def test_overlapping_terms_are_refused_naming_the_contract(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    first = await create_contract(
        client, admin, starts_at=days_from_now(-10), ends_at=days_from_now(10)
    )
    body = await create_contract(
        client, admin, starts_at=days_from_now(5), ends_at=days_from_now(50), expect=409
    )
    assert body["type"].endswith("/contract-overlap")
    assert body["conflicting_contract"] == first["id"]
    assert first["id"] in body["detail"]
    open_ended = await create_contract(client, admin, starts_at=days_from_now(-30), expect=409)
    assert open_ended["conflicting_contract"] == first["id"]
    # a term starting exactly where the other ends shares no instant
    await create_contract(client, admin, starts_at=first["ends_at"], ends_at=days_from_now(40))


async def test_another_customers_contracts_do_not_overlap(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    await create_contract(client, admin)
    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="globex")


async def test_concurrent_overlapping_creations_let_exactly_one_through(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    async def attempt(i: int) -> httpx.Response:
        body = {"plan": "team", "kind": "standard", "starts_at": days_from_now(-1 + i / 10)}
        return await client.post("/v1/customers/acme/contracts", json=body, headers=admin)

    responses = await asyncio.gather(*(attempt(i) for i in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 9, [r.text for r in responses if r.status_code >= 500]
    (winner,) = [r.json()["id"] for r in responses if r.status_code == 201]
    assert {r.json()["conflicting_contract"] for r in responses if r.status_code == 409} == {winner}
    listed = (await client.get("/v1/customers/acme/contracts", headers=admin)).json()
    assert [c["id"] for c in listed["items"]] == [winner]


# -- reads, scopes, idempotency, side effects -------------------------------------------------


async def test_list_is_paginated_oldest_first(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    ids = []
    for year in range(3):
        start = 400 * year
        created = await create_contract(
            client, admin, starts_at=days_from_now(start), ends_at=days_from_now(start + 365)
        )
        ids.append(created["id"])
    first = (await client.get("/v1/customers/acme/contracts?limit=2", headers=admin)).json()
    assert [c["id"] for c in first["items"]] == ids[:2] and first["next_cursor"]
    rest = (
        await client.get(
            f"/v1/customers/acme/contracts?limit=2&cursor={first['next_cursor']}", headers=admin
        )
    ).json()
    assert [c["id"] for c in rest["items"]] == ids[2:] and rest["next_cursor"] is None


async def test_readers_read_and_only_admins_write(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    created = await create_contract(client, admin)
    finance = await create_key(app, scopes=["finance"])
    own = await create_key(app, scopes=["customer:acme"])
    assert (await client.get(f"/v1/contracts/{created['id']}", headers=finance)).status_code == 200
    assert (await client.get("/v1/customers/acme/contracts", headers=own)).status_code == 200
    refused = await client.post(
        "/v1/customers/acme/contracts",
        json={"plan": "team", "starts_at": days_from_now(500)},
        headers=finance,
    )
    assert refused.status_code == 403


async def test_create_is_idempotent(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    body = {"plan": "team", "starts_at": days_from_now(-1)}
    headers = {**admin, "Idempotency-Key": "contract-1"}
    first = await client.post("/v1/customers/acme/contracts", json=body, headers=headers)
    again = await client.post("/v1/customers/acme/contracts", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


async def test_create_is_audited_and_bumps_the_state_version(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    version = await state_version(app)
    created = await create_contract(client, admin)
    assert await state_version(app) == version + 1
    records = (
        await client.get(f"/v1/audit?target=contract:{created['id']}", headers=admin)
    ).json()["items"]
    assert [r["action"] for r in records] == ["contract.created"]
    assert records[0]["before"] is None
    assert records[0]["after"]["plan"] == "team" and records[0]["after"]["revision"] == 1
    verify = (await client.get("/v1/audit/verify", headers=admin)).json()
    assert verify["ok"] is True


async def test_a_customer_with_contracts_cannot_be_deleted(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    created = await create_contract(client, admin)
    refused = await client.delete("/v1/customers/acme", headers=admin)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/customer-in-use")
    assert created["id"] in refused.json()["detail"]
    await create_customer(client, admin, key="empty")
    assert (await client.delete("/v1/customers/empty", headers=admin)).status_code == 204


# -- current_terms ---------------------------------------------------------------------------


async def test_current_terms_finds_the_contract_in_force(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    now = datetime.now(UTC)
    past = await create_contract(
        client,
        admin,
        starts_at=iso(now - timedelta(days=60)),
        ends_at=iso(now - timedelta(days=30)),
    )
    current = await create_contract(
        client, admin, starts_at=iso(now - timedelta(days=1)), seats={"limit": 4}
    )
    acme_id = await customer_id(app)
    async with session_scope(app.state.sessionmaker) as session:
        in_force = await contracts.current_terms(session, customer_id=acme_id, at=now)
        assert in_force is not None
        assert (in_force.contract_id, in_force.revision) == (current["id"], 1)
        assert in_force.terms.seats is not None and in_force.terms.seats.limit == 4
        earlier = await contracts.current_terms(
            session, customer_id=acme_id, at=now - timedelta(days=45)
        )
        assert earlier is not None and earlier.contract_id == past["id"]
        gap = await contracts.current_terms(
            session, customer_id=acme_id, at=now - timedelta(days=10)
        )
        assert gap is None


# -- instants UTC cannot hold ----------------------------------------------------------------

_BEFORE_YEAR_1 = "0001-01-01T00:00:00+01:00"  # 31 Dec of year 0 in UTC
_AFTER_9999 = "9999-12-31T23:59:59-01:00"  # year 10000 in UTC


@pytest.mark.parametrize("moment", [_BEFORE_YEAR_1, _AFTER_9999])
async def test_an_instant_utc_cannot_hold_is_a_422_on_every_contract_route(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str, moment: str
) -> None:
    """Was a 500 (OverflowError while formatting) on create, amend and terminate."""
    base = "/v1/customers/acme/contracts"
    for body, path in (
        ({"plan": "team", "starts_at": moment}, "starts_at"),
        ({"plan": "team", "ends_at": moment}, "ends_at"),
        (
            {"plan": "team", "overrides": [
                {"feature": "sso", "grant": True, "expires_at": moment, "reason": "x"}
            ]},
            "overrides[0].expires_at",
        ),
    ):  # fmt: skip
        answer = await client.post(base, json=body, headers=admin)
        assert answer.status_code == 422, answer.text
        assert path in error_paths(answer), answer.text
    contract = await create_contract(client, admin)
    url = f"/v1/contracts/{contract['id']}"
    match = {**admin, "If-Match": f'"{contract["revision"]}"'}
    answer = await client.patch(url, json={"effective_at": moment}, headers=match)
    assert answer.status_code == 422 and "effective_at" in error_paths(answer), answer.text
    answer = await client.post(f"{url}/terminate", json={"at": moment}, headers=match)
    assert answer.status_code == 422 and "at" in error_paths(answer), answer.text
