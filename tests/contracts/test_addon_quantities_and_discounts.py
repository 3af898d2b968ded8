"""Add-on quantities and the negotiated discount through the contract API: the bare-name form
still works, `{name, quantity}` stores a quantity, responses show every quantity, and a
standard contract's discount carries its reason, audited and amended by revisions."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from tests.artifacts.helpers import artifact
from tests.factories.contracts import create_contract, error_paths


def if_match(headers: dict[str, str], contract: dict[str, Any]) -> dict[str, str]:
    return {**headers, "If-Match": f'"{contract["revision"]}"'}


async def amend(
    client: httpx.AsyncClient, headers: dict[str, str], contract: dict[str, Any], **body: Any
) -> httpx.Response:
    return await client.patch(
        f"/v1/contracts/{contract['id']}", json=body, headers=if_match(headers, contract)
    )


async def test_bare_names_and_quantities_side_by_side(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    created = await create_contract(
        client,
        admin,
        addons=["audit_pack", {"name": "priority_support", "quantity": 3}],
    )
    assert created["addons"] == ["audit_pack", "priority_support"]
    assert created["addon_quantities"] == {"audit_pack": 1, "priority_support": 3}
    fetched = (await client.get(f"/v1/contracts/{created['id']}", headers=admin)).json()
    assert fetched["addon_quantities"] == {"audit_pack": 1, "priority_support": 3}


async def test_a_contract_without_quantities_reads_as_before(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    created = await create_contract(client, admin, addons=["audit_pack"])
    assert created["addons"] == ["audit_pack"]
    assert created["addon_quantities"] == {"audit_pack": 1}
    assert created["discount_reason"] is None
    revision = (await client.get(f"/v1/contracts/{created['id']}/revisions", headers=admin)).json()
    assert revision["items"][0]["terms"]["addon_quantities"] == {"audit_pack": 1}


async def test_amending_a_quantity_writes_a_revision(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    created = await create_contract(client, admin, addons=["audit_pack"])
    amended = await amend(client, admin, created, addons=[{"name": "audit_pack", "quantity": 4}])
    assert amended.status_code == 200, amended.text
    assert amended.json()["revision"] == 2
    assert amended.json()["addon_quantities"] == {"audit_pack": 4}
    same = await amend(
        client, admin, amended.json(), addons=[{"name": "audit_pack", "quantity": 4}]
    )
    assert same.json()["revision"] == 2  # nothing changed: no revision
    back = await amend(client, admin, amended.json(), addons=["audit_pack"])
    assert back.json()["revision"] == 3 and back.json()["addon_quantities"] == {"audit_pack": 1}


async def test_bad_quantities_are_422_with_paths(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    for addons, paths in [
        ([{"name": "audit_pack", "quantity": 0}], ["addons[0].quantity"]),
        (["audit_pack", {"name": "audit_pack", "quantity": 2}], ["addons[1]"]),
        ([{"name": "audit_pack", "quantity": 2, "size": "xl"}], ["addons[0].size"]),
        ([{"quantity": 2}], ["addons[0].name"]),
        ([{"name": "jetpack", "quantity": 2}], ["addons[0]"]),
    ]:
        response = await create_contract(client, admin, expect=422, addons=addons)
        assert error_paths(response) == paths, addons


async def test_a_negotiated_discount_on_a_standard_contract_carries_its_reason(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    refused = await create_contract(client, admin, expect=422, discount_percent="12.5")
    assert error_paths(refused) == ["discount_reason"]
    created = await create_contract(
        client, admin, discount_percent="12.5", discount_reason="three-year commitment"
    )
    assert created["discount_percent"] == "12.50"
    assert created["discount_reason"] == "three-year commitment"
    audit = await client.get(
        "/v1/audit", params={"target_type": "contract", "target_key": created["id"]}, headers=admin
    )
    assert audit.status_code == 200, audit.text
    records = audit.json()["items"]
    assert records[0]["after"]["discount_reason"] == "three-year commitment"


async def test_a_changed_discount_needs_a_new_reason_and_a_cleared_one_drops_it(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    created = await create_contract(
        client, admin, discount_percent=10, discount_reason="launch partner"
    )
    silent = await amend(client, admin, created, discount_percent=15)
    assert silent.status_code == 422 and error_paths(silent) == ["discount_reason"]
    raised = await amend(
        client, admin, created, discount_percent=15, discount_reason="renewal at two years"
    )
    assert raised.status_code == 200, raised.text
    body = raised.json()
    assert body["discount_percent"] == "15.00" and body["discount_reason"] == "renewal at two years"
    cleared = await amend(client, admin, body, discount_percent=None)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["discount_percent"] is None and cleared.json()["discount_reason"] is None
    history = (await client.get(f"/v1/contracts/{created['id']}/revisions", headers=admin)).json()
    assert [r["terms"]["discount_reason"] for r in history["items"]] == [
        "launch partner",
        "renewal at two years",
        None,
    ]


async def test_a_reason_alone_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    response = await create_contract(client, admin, expect=422, discount_reason="why not")
    assert error_paths(response) == ["discount_reason"]


async def test_a_trial_converts_with_addon_quantities_and_a_negotiated_discount(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    from tests.factories.contracts import days_from_now

    trial = await create_contract(client, admin, kind="trial", ends_at=days_from_now(14))
    url = f"/v1/contracts/{trial['id']}/convert"
    silent = await client.post(url, json={"discount_percent": 15}, headers=admin)
    assert silent.status_code == 422 and error_paths(silent) == ["discount_reason"]
    body = {
        "addons": [{"name": "audit_pack", "quantity": 2}],
        "discount_percent": 15,
        "discount_reason": "converted in the launch month",
    }
    converted = await client.post(url, json=body, headers=admin)
    assert converted.status_code == 200, converted.text
    paid = converted.json()
    assert paid["kind"] == "standard" and paid["addon_quantities"] == {"audit_pack": 2}
    assert paid["discount_percent"] == "15.00"
    assert paid["discount_reason"] == "converted in the launch month"


async def test_entitlements_and_the_artifact_show_the_bought_quantities(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    await create_contract(
        client, admin, addons=["audit_pack", {"name": "priority_support", "quantity": 3}]
    )
    response = await client.get("/v1/customers/acme/entitlements", headers=admin)
    assert response.status_code == 200, response.text
    contract = response.json()["contract"]
    assert contract["addons"] == ["audit_pack", "priority_support"]
    assert contract["addon_quantities"] == {"audit_pack": 1, "priority_support": 3}
    assert contract["quantities"] is None  # no seats or instance licences bought
    token = await artifact(client, admin)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["contract"]["addon_quantities"] == {"audit_pack": 1, "priority_support": 3}


async def test_a_blank_reason_is_refused_on_create_and_amend(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    for blank in ("", "   ", "\t\n"):
        refused = await create_contract(
            client, admin, expect=422, discount_percent=10, discount_reason=blank
        )
        assert error_paths(refused) == ["discount_reason"], repr(blank)
    created = await create_contract(client, admin, discount_percent=10, discount_reason="deal")
    patched = await amend(client, admin, created, discount_percent=15, discount_reason="   ")
    assert patched.status_code == 422 and error_paths(patched) == ["discount_reason"]


async def test_a_blank_reason_is_refused_on_convert(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    from tests.factories.contracts import days_from_now

    trial = await create_contract(client, admin, kind="trial", ends_at=days_from_now(14))
    converted = await client.post(
        f"/v1/contracts/{trial['id']}/convert",
        json={"discount_percent": 15, "discount_reason": " "},
        headers=admin,
    )
    assert converted.status_code == 422 and error_paths(converted) == ["discount_reason"]
