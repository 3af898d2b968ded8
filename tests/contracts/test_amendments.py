"""Amending (PATCH with If-Match, revisions, effective_at) and terminating contracts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from allotment.contracts import service as contracts
from allotment.db import session_scope
from tests.factories.contracts import (
    create_contract,
    customer_id,
    days_from_now,
    error_paths,
    state_version,
)


def if_match(headers: dict[str, str], revision: int) -> dict[str, str]:
    return {**headers, "If-Match": f'"{revision}"'}


async def amend(
    client: httpx.AsyncClient, headers: dict[str, str], contract: dict[str, Any], **body: Any
) -> httpx.Response:
    return await client.patch(
        f"/v1/contracts/{contract['id']}",
        json=body,
        headers=if_match(headers, contract["revision"]),
    )


async def revisions(client: httpx.AsyncClient, headers: dict[str, str], contract_id: str) -> list:
    response = await client.get(f"/v1/contracts/{contract_id}/revisions", headers=headers)
    assert response.status_code == 200
    return response.json()["items"]  # type: ignore[no-any-return]


async def audit_actions(
    client: httpx.AsyncClient, headers: dict[str, str], contract_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/audit?target=contract:{contract_id}", headers=headers)
    return list(reversed(response.json()["items"]))  # oldest first


# -- If-Match --------------------------------------------------------------------------------


async def test_patch_needs_a_current_if_match(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin)
    url = f"/v1/contracts/{contract['id']}"
    missing = await client.patch(url, json={"seats": {"limit": 20}}, headers=admin)
    assert missing.status_code == 428
    assert "If-Match" in missing.json()["detail"]
    ok = await client.patch(url, json={"seats": {"limit": 20}}, headers=if_match(admin, 1))
    assert ok.status_code == 200 and ok.json()["revision"] == 2
    assert ok.headers["etag"] == '"2"'
    stale = await client.patch(url, json={"seats": {"limit": 30}}, headers=if_match(admin, 1))
    assert stale.status_code == 412 and stale.json()["current_revision"] == 2
    assert (await client.get(url, headers=admin)).json()["seats"]["limit"] == 20


async def test_amending_an_unknown_contract_is_404(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    response = await client.patch(
        "/v1/contracts/ctr_nope", json={"plan": "team"}, headers=if_match(admin, 1)
    )
    assert response.status_code == 404


# -- immutable attributes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"attributes": {"region": "us"}}, ["attributes.region"]),
        (
            {"attributes": {"region": "us", "edition": "x"}},
            ["attributes.edition", "attributes.region"],
        ),
        ({"attributes": {}}, ["attributes"]),
        ({"kind": "trial"}, ["kind"]),
        ({"starts_at": "2026-01-01T00:00:00Z", "seats": {"limit": 3}}, ["starts_at"]),
    ],
)
async def test_immutable_fields_are_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    acme: str,
    body: dict[str, Any],
    paths: list[str],
) -> None:
    contract = await create_contract(client, admin, attributes={"region": "eu"})
    response = await amend(client, admin, contract, **body)
    assert response.status_code == 422
    assert error_paths(response) == paths
    assert "immutable" in response.json()["errors"][0]["message"]
    unchanged = (await client.get(f"/v1/contracts/{contract['id']}", headers=admin)).json()
    assert unchanged == contract


async def test_a_plan_change_keeps_the_attributes(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, plan="team", attributes={"region": "eu"})
    upgraded = await amend(client, admin, contract, plan="enterprise")
    assert upgraded.status_code == 200
    assert upgraded.json()["plan"] == "enterprise"
    assert upgraded.json()["attributes"] == contract["attributes"]  # edition stays "team"


# -- revisions and effective_at --------------------------------------------------------------


async def test_each_amendment_is_a_revision_in_effective_order(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, starts_at=days_from_now(-30))
    second = await amend(
        client, admin, contract, seats={"limit": 15}, effective_at=days_from_now(-10)
    )
    assert second.status_code == 200, second.text
    third = await amend(client, admin, second.json(), addons=["audit_pack"])
    assert third.status_code == 200
    fourth = await amend(
        client, admin, third.json(), seats={"limit": 40}, effective_at=days_from_now(10)
    )
    assert fourth.status_code == 200 and fourth.json()["revision"] == 4
    history = await revisions(client, admin, contract["id"])
    assert [r["revision"] for r in history] == [1, 2, 3, 4]
    moments = [r["effective_at"] for r in history]
    assert moments == sorted(moments)
    assert moments[0] == contract["starts_at"]
    assert [r["terms"]["seats"] for r in history] == [
        None,
        {"limit": 15, "burst": None},
        {"limit": 15, "burst": None},
        {"limit": 40, "burst": None},
    ]
    assert history[2]["terms"]["addons"] == ["audit_pack"]
    assert all(r["actor"].startswith("api_key:") for r in history)

    # the revision in force at each moment, as billing and checks will ask
    acme_id = await customer_id(app)
    async with session_scope(app.state.sessionmaker) as session:
        now = datetime.now(UTC)
        for days, revision in [(-20, 1), (-5, 2), (0, 3), (11, 4)]:
            found = await contracts.current_terms(
                session, customer_id=acme_id, at=now + timedelta(days=days)
            )
            assert found is not None and found.revision == revision, days


async def test_effective_at_never_goes_before_the_previous_revision(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, starts_at=days_from_now(-30))
    before_start = await amend(
        client, admin, contract, seats={"limit": 5}, effective_at=days_from_now(-31)
    )
    assert before_start.status_code == 422 and error_paths(before_start) == ["effective_at"]
    scheduled = await amend(
        client, admin, contract, seats={"limit": 5}, effective_at=days_from_now(10)
    )
    assert scheduled.status_code == 200
    earlier = await amend(
        client, admin, scheduled.json(), seats={"limit": 6}, effective_at=days_from_now(5)
    )
    assert earlier.status_code == 422 and error_paths(earlier) == ["effective_at"]
    # by default an amendment takes effect now, or when the latest revision does if later
    default = await amend(client, admin, scheduled.json(), seats={"limit": 7})
    assert default.status_code == 200
    assert default.json()["effective_at"] == scheduled.json()["effective_at"]


async def test_amending_a_scheduled_contract_applies_from_its_start(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, starts_at=days_from_now(30))
    amended = await amend(client, admin, contract, instances={"limit": 8})
    assert amended.status_code == 200
    assert amended.json()["effective_at"] == contract["starts_at"]


async def test_amendments_are_checked_against_the_catalog_and_kind_rules(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    trial = await create_contract(client, admin, kind="trial", ends_at=days_from_now(14))
    for body, paths in [
        ({"plan": "platinum"}, ["plan"]),
        ({"addons": ["jetpack"]}, ["addons[0]"]),
        ({"ends_at": None}, ["ends_at"]),
        ({"discount_percent": 10}, ["discount_percent"]),
        ({"plan": None}, ["plan"]),
        (
            {"overrides": [{"feature": "ghost", "action": "grant", "reason": "x"}]},
            ["overrides[0].feature"],
        ),
        ({"policy_version": 999}, ["policy_version"]),
        ({"ends_at": days_from_now(-5)}, ["ends_at"]),  # before the amendment takes effect
        ({"seats": {"limit": 2}, "surprise": True}, ["surprise"]),
    ]:
        response = await amend(client, admin, trial, **body)
        assert response.status_code == 422, (body, response.text)
        assert error_paths(response) == paths, body
    assert len(await revisions(client, admin, trial["id"])) == 1


async def test_null_returns_a_pool_to_the_plan_and_unpins(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str, policy: int
) -> None:
    contract = await create_contract(
        client, admin, seats={"limit": 50}, instances={"limit": 9}, policy_version=policy
    )
    amended = await amend(client, admin, contract, seats=None, policy_version=None)
    assert amended.status_code == 200
    body = amended.json()
    assert body["seats"] is None and body["instances"] == {"limit": 9}
    assert body["policy_version"] is None


async def test_an_amendment_that_changes_nothing_writes_no_revision(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, seats={"limit": 12})
    same = await amend(client, admin, contract, seats={"limit": 12})
    assert same.status_code == 200 and same.json()["revision"] == 1
    assert len(await revisions(client, admin, contract["id"])) == 1


async def test_extending_into_the_next_contract_is_409(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    first = await create_contract(
        client, admin, starts_at=days_from_now(-10), ends_at=days_from_now(10)
    )
    second = await create_contract(
        client, admin, starts_at=days_from_now(10), ends_at=days_from_now(20)
    )
    extended = await amend(client, admin, first, ends_at=days_from_now(15))
    assert extended.status_code == 409
    assert extended.json()["conflicting_contract"] == second["id"]
    shortened = await amend(client, admin, first, ends_at=days_from_now(5))
    assert shortened.status_code == 200


async def test_amendments_are_audited_with_before_and_after(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin)
    version = await state_version(app)
    amended = await amend(client, admin, contract, seats={"limit": 33})
    assert amended.status_code == 200
    assert await state_version(app) == version + 1
    records = await audit_actions(client, admin, contract["id"])
    assert [r["action"] for r in records] == ["contract.created", "contract.amended"]
    change = records[1]
    assert change["before"]["seats"] is None and change["before"]["revision"] == 1
    assert change["after"]["seats"] == {"limit": 33, "burst": None}
    assert change["after"]["revision"] == 2
    assert change["after"]["revision_effective_at"] == amended.json()["effective_at"]


# -- termination -----------------------------------------------------------------------------


async def terminate(
    client: httpx.AsyncClient, headers: dict[str, str], contract_id: str, **body: Any
) -> httpx.Response:
    return await client.post(f"/v1/contracts/{contract_id}/terminate", json=body, headers=headers)


async def test_terminate_now_ends_the_term_and_frees_the_customer(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, starts_at=days_from_now(-30))
    version = await state_version(app)
    response = await client.post(f"/v1/contracts/{contract['id']}/terminate", headers=admin)
    assert response.status_code == 200, response.text
    ended = response.json()
    assert ended["status"] == "terminated" and ended["revision"] == 2
    assert ended["ends_at"] == ended["terminated_at"] == ended["effective_at"]
    assert response.headers["etag"] == '"2"'
    assert await state_version(app) == version + 1
    history = await revisions(client, admin, contract["id"])
    assert history[-1]["terms"]["terminated_at"] == ended["terminated_at"]

    # the old term no longer holds the future; the past is still taken
    await create_contract(client, admin, starts_at=days_from_now(0.001))
    clash = await create_contract(
        client, admin, starts_at=days_from_now(-20), ends_at=days_from_now(-10), expect=409
    )
    assert clash["conflicting_contract"] == contract["id"]

    records = await audit_actions(client, admin, contract["id"])
    assert records[-1]["action"] == "contract.terminated"
    assert records[-1]["before"]["ends_at"] is None
    assert records[-1]["after"]["ends_at"] == ended["ends_at"]


async def test_terminate_at_a_future_time(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, starts_at=days_from_now(-30))
    at = days_from_now(10)
    response = await terminate(client, admin, contract["id"], at=at)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "active" and body["ends_at"] == at == body["terminated_at"]
    await create_contract(client, admin, starts_at=days_from_now(5), expect=409)
    await create_contract(client, admin, starts_at=at)


async def test_terminate_in_the_past_back_to_the_latest_revision(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, starts_at=days_from_now(-30))
    amended = await amend(
        client, admin, contract, seats={"limit": 4}, effective_at=days_from_now(-10)
    )
    too_early = await terminate(client, admin, contract["id"], at=days_from_now(-20))
    assert too_early.status_code == 422 and error_paths(too_early) == ["at"]
    response = await terminate(client, admin, contract["id"], at=days_from_now(-5))
    assert response.status_code == 200
    assert response.json()["status"] == "terminated"
    assert amended.json()["revision"] == 2 and response.json()["revision"] == 3


async def test_terminating_a_scheduled_contract_cancels_it(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    starts = days_from_now(30)
    contract = await create_contract(client, admin, starts_at=starts, ends_at=days_from_now(60))
    response = await terminate(client, admin, contract["id"])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "terminated"
    assert body["ends_at"] == starts  # an empty term
    await create_contract(client, admin, starts_at=starts, ends_at=days_from_now(60))


async def test_terminate_refusals(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, ends_at=days_from_now(10))
    past_end = await terminate(client, admin, contract["id"], at=days_from_now(11))
    assert past_end.status_code == 422 and error_paths(past_end) == ["at"]
    stale = await client.post(
        f"/v1/contracts/{contract['id']}/terminate", json={}, headers=if_match(admin, 7)
    )
    assert stale.status_code == 412
    assert (await terminate(client, admin, contract["id"])).status_code == 200
    again = await terminate(client, admin, contract["id"])
    assert again.status_code == 409 and again.json()["type"].endswith("/contract-terminated")
    amended = await amend(client, admin, {**contract, "revision": 2}, seats={"limit": 1})
    assert amended.status_code == 409
    expired = await create_contract(
        client, admin, starts_at=days_from_now(-100), ends_at=days_from_now(-50)
    )
    assert (await terminate(client, admin, expired["id"])).status_code == 422
    assert (await terminate(client, admin, "ctr_nope")).status_code == 404


async def test_a_retried_termination_replays_instead_of_conflicting(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin)
    headers = {**admin, "Idempotency-Key": "end-acme"}
    url = f"/v1/contracts/{contract['id']}/terminate"
    first = await client.post(url, json={}, headers=headers)
    retry = await client.post(url, json={}, headers=headers)
    assert first.status_code == retry.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
