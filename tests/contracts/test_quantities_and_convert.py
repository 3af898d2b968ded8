"""Bought quantities on a contract, and a trial's conversion in place, through the API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories.contracts import create_contract, days_from_now, error_paths
from tests.factories.customers import create_customer
from tests.factories.licensing import licensing_document
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import check

BOUGHT = {"seats": 25, "instances": 10}


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    await publish_policy(client, admin, licensing_document())
    await create_customer(client, admin, key="acme")
    return "acme"


async def convert(
    client: httpx.AsyncClient, headers: dict[str, str], contract_id: str, **body: Any
) -> httpx.Response:
    return await client.post(f"/v1/contracts/{contract_id}/convert", json=body, headers=headers)


async def audit_actions(
    client: httpx.AsyncClient, headers: dict[str, str], contract_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/audit?target=contract:{contract_id}", headers=headers)
    return list(reversed(response.json()["items"]))


# -- quantities ------------------------------------------------------------------------------


async def test_a_contracted_plan_needs_its_quantities(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    refused = await create_contract(client, admin, plan="licensed", expect=422)
    assert error_paths(refused) == ["quantities.seats", "quantities.instances"]
    assert "basis contracted" in refused["errors"][0]["message"]
    half = await create_contract(
        client, admin, plan="licensed", quantities={"seats": 25}, expect=422
    )
    assert error_paths(half) == ["quantities.instances"]


async def test_a_quantity_nothing_bills_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    refused = await create_contract(client, admin, plan="team", quantities=BOUGHT, expect=422)
    assert error_paths(refused) == ["quantities.seats", "quantities.instances"]
    assert "leave quantities.seats out" in refused["errors"][0]["message"]


async def test_quantities_name_something_and_are_counts(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    empty = await create_contract(client, admin, plan="licensed", quantities={}, expect=422)
    assert error_paths(empty) == ["quantities"]
    negative = await create_contract(
        client, admin, plan="licensed", quantities={"seats": -1, "instances": 1}, expect=422
    )
    assert error_paths(negative) == ["quantities.seats"]
    # Counts are JSON integers: "5" and 5.0 are refused, not converted, as elsewhere.
    converted = await create_contract(
        client,
        admin,
        plan="licensed",
        quantities={"seats": "5", "instances": 5.0},
        seats={"limit": "12"},
        expect=422,
    )
    assert error_paths(converted) == ["seats.limit", "quantities.seats", "quantities.instances"]


async def test_quantities_are_stored_revisioned_and_audited(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, plan="licensed", quantities=BOUGHT)
    assert contract["quantities"] == BOUGHT
    amended = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"quantities": {"seats": 30, "instances": 10}},
        headers={**admin, "If-Match": "1"},
    )
    assert amended.status_code == 200, amended.text
    assert amended.json()["quantities"] == {"seats": 30, "instances": 10}
    history = (await client.get(f"/v1/contracts/{contract['id']}/revisions", headers=admin)).json()[
        "items"
    ]
    assert [r["terms"]["quantities"] for r in history] == [BOUGHT, {"seats": 30, "instances": 10}]
    records = await audit_actions(client, admin, contract["id"])
    assert [r["action"] for r in records] == ["contract.created", "contract.amended"]
    assert records[1]["before"]["quantities"] == BOUGHT
    assert records[1]["after"]["quantities"]["seats"] == 30
    # a contract that bought nothing reads null
    await create_customer(client, admin, key="globex")
    plain = await create_contract(client, admin, customer="globex", plan="team")
    assert plain["quantities"] is None


async def test_clearing_a_needed_quantity_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, plan="licensed", quantities=BOUGHT)
    cleared = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"quantities": None},
        headers={**admin, "If-Match": "1"},
    )
    assert cleared.status_code == 422
    assert error_paths(cleared) == ["quantities.seats", "quantities.instances"]


# -- conversion ------------------------------------------------------------------------------


async def trial(client: httpx.AsyncClient, admin: dict[str, str], **fields: Any) -> dict:
    return await create_contract(
        client, admin, plan="basic", kind="trial", ends_at=days_from_now(13), **fields
    )


async def test_a_trial_converts_in_one_revision(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    acme: str,
) -> None:
    contract = await trial(client, admin)
    assert (await check(client, backend, "api"))["allowed"] is False  # basic lacks it
    response = await convert(
        client, admin, contract["id"], plan="licensed", addons=["audit_pack"], quantities=BOUGHT
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    paid = response.json()
    assert (paid["kind"], paid["plan"], paid["revision"]) == ("standard", "licensed", 2)
    assert paid["ends_at"] is None and paid["discount_percent"] is None
    assert paid["addons"] == ["audit_pack"] and paid["quantities"] == BOUGHT
    history = (await client.get(f"/v1/contracts/{contract['id']}/revisions", headers=admin)).json()[
        "items"
    ]
    assert [(r["terms"]["kind"], r["terms"]["plan"]) for r in history] == [
        ("trial", "basic"),
        ("standard", "licensed"),
    ]
    records = await audit_actions(client, admin, contract["id"])
    assert [r["action"] for r in records] == ["contract.created", "contract.converted"]
    assert records[1]["before"]["kind"] == "trial"
    assert records[1]["after"]["kind"] == "standard"
    assert (await check(client, backend, "api"))["allowed"] is True  # the paid plan's


async def test_a_conversion_keeps_what_it_does_not_name_and_may_set_an_end(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await trial(client, admin, addons=["audit_pack"])
    end = days_from_now(365)
    paid = (await convert(client, admin, contract["id"], ends_at=end)).json()
    assert (paid["plan"], paid["addons"], paid["kind"]) == ("basic", ["audit_pack"], "standard")
    assert paid["ends_at"][:16] == end[:16]


async def test_a_retried_conversion_replays(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await trial(client, admin)
    headers = {**admin, "Idempotency-Key": "convert-acme"}
    body = {"plan": "licensed", "quantities": BOUGHT}
    first = await convert(client, headers, contract["id"], **body)
    retry = await convert(client, headers, contract["id"], **body)
    assert first.status_code == retry.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    history = (await client.get(f"/v1/contracts/{contract['id']}/revisions", headers=admin)).json()[
        "items"
    ]
    assert len(history) == 2
    # without the key, a second conversion is a conflict: it is no longer a trial
    again = await convert(client, admin, contract["id"], **body)
    assert again.status_code == 409
    assert again.json()["type"].endswith("/contract-not-trial")


async def test_only_a_trial_converts(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin, plan="team")
    refused = await convert(client, admin, contract["id"], plan="licensed", quantities=BOUGHT)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["type"].endswith("/contract-not-trial") and problem["kind"] == "standard"
    assert (await convert(client, admin, "ctr_nope")).status_code == 404


async def test_a_conversion_is_checked_like_a_contract(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await trial(client, admin)
    missing = await convert(client, admin, contract["id"], plan="licensed")
    assert missing.status_code == 422
    assert error_paths(missing) == ["quantities.seats", "quantities.instances"]
    unknown = await convert(client, admin, contract["id"], plan="nope")
    assert error_paths(unknown) == ["plan"]
    late = await convert(client, admin, contract["id"], at=days_from_now(14))
    assert late.status_code == 422 and error_paths(late) == ["at"]
    early = await convert(client, admin, contract["id"], at=days_from_now(-2))
    assert early.status_code == 422 and error_paths(early) == ["at"]
    wrong = await client.post(
        f"/v1/contracts/{contract['id']}/convert",
        json={"kind": "pilot"},
        headers=admin,
    )
    assert wrong.status_code == 422 and error_paths(wrong) == ["kind"]
    stale = await client.post(
        f"/v1/contracts/{contract['id']}/convert", json={}, headers={**admin, "If-Match": "7"}
    )
    assert stale.status_code == 412


async def test_an_expired_trial_converts_only_backdated_to_its_end(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    ended = days_from_now(-1)
    contract = await create_contract(
        client, admin, plan="basic", kind="trial", starts_at=days_from_now(-15), ends_at=ended
    )
    now = await convert(client, admin, contract["id"])
    assert now.status_code == 422 and error_paths(now) == ["at"]
    seamless = await convert(client, admin, contract["id"], at=ended)
    assert seamless.status_code == 200, seamless.text
    assert seamless.json()["status"] == "active"


async def test_a_conversion_may_clear_what_the_trial_bought(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(
        client,
        admin,
        plan="licensed",
        kind="trial",
        ends_at=days_from_now(13),
        quantities=BOUGHT,
        seats={"limit": 8},
    )
    kept = await convert(client, admin, contract["id"], plan="team")
    assert kept.status_code == 422  # team bills no bought quantity
    assert error_paths(kept) == ["quantities.seats", "quantities.instances"]
    cleared = await convert(client, admin, contract["id"], plan="team", quantities=None)
    assert cleared.status_code == 200, cleared.text
    paid = cleared.json()
    assert paid["quantities"] is None and paid["seats"] == {"limit": 8, "burst": None}
