"""Through the API: a plan that enforces its credits; checks of a metered feature turn to
`credits_exhausted` once use spends the wallet and back to allowed after a top-up, and the
entitlements show the balance (docs/check.md, "credits_exhausted")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.credits.helpers import PAYG, grant, use, wallet
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import event, metered_document, send

PREPAID = {
    **PAYG,
    "features": ["api", "exports", "reports"],
    "price": {**PAYG["price"], "credits": {"enforce": True, "applies_to": ["meter:api_calls"]}},
}


async def _check(client: httpx.AsyncClient, headers: dict[str, str], feature: str) -> Any:
    response = await client.post(
        "/v1/check", json={"customer": "acme", "feature": feature}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _credits(client: httpx.AsyncClient, headers: dict[str, str]) -> Any:
    response = await client.get("/v1/customers/acme/entitlements", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["credits"]


async def test_checks_deny_when_the_credits_are_spent_and_allow_after_a_top_up(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    document = metered_document()
    document["plans"]["prepaid"] = PREPAID
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, plan="prepaid")
    backend = await create_key(app, scopes=["check"])
    await grant(client, admin, "10.00")

    assert (await _check(client, backend, "api"))["reason"] == "ok"
    assert await _credits(client, backend) == {
        "balance": "10.00",
        "currency": "USD",
        "enforce": True,
        "exhausted": False,
        "applies_to": ["meter:api_calls"],
    }
    # 600 calls: 6.00 of the 10.00.
    assert (await send(client, backend, [event("e1", data={"count": 600})])).status_code == 200
    assert (await _check(client, backend, "api"))["allowed"] is True
    assert (await _credits(client, backend))["balance"] == "4.00"
    # The same balance as the wallet's own ledger (drawn from a preview of the month to date).
    assert (await wallet(client, admin))["balance"] == "4.00"

    # 400 more: the wallet is spent.
    assert (await send(client, backend, [event("e2", data={"count": 400})])).status_code == 200
    denied = await _check(client, backend, "api")
    assert (denied["allowed"], denied["reason"]) == (False, "credits_exhausted")
    assert "spent" in denied["detail"]
    # The wallet pays only api_calls: exports (its own meter) and unmetered features go on.
    assert (await _check(client, backend, "exports"))["allowed"] is True
    assert (await _check(client, backend, "reports"))["allowed"] is True
    held = await _credits(client, backend)
    assert (held["balance"], held["exhausted"]) == ("0.00", True)
    entitlements = await client.get("/v1/customers/acme/entitlements", headers=backend)
    api = next(f for f in entitlements.json()["features"] if f["feature"] == "api")
    # The entitlements say what a check says (docs/check.md, "GET …/entitlements").
    assert (api["allowed"], api["reason"]) == (False, "credits_exhausted")

    # A top-up of 5.00: allowed again at once.
    await grant(client, admin, "5.00")
    assert (await _check(client, backend, "api"))["reason"] == "ok"
    assert (await _credits(client, backend))["balance"] == "5.00"
    batch = await client.post(
        "/v1/check/batch", json={"customer": "acme", "features": ["api"]}, headers=backend
    )
    assert batch.json()["decisions"][0]["reason"] == "ok"


async def test_a_plan_that_does_not_enforce_only_shows_the_balance(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    document = metered_document()
    document["plans"]["payg"] = PAYG
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, plan="payg")
    backend = await create_key(app, scopes=["check"])
    assert await _credits(client, backend) is None  # no grant, no plan credits: no wallet
    await grant(client, admin, "1.00")
    assert (await send(client, backend, [event("e1", data={"count": 500})])).status_code == 200
    assert (await _check(client, backend, "api"))["allowed"] is True
    held = await _credits(client, backend)
    assert (held["balance"], held["enforce"], held["exhausted"]) == ("0.00", False, True)


async def test_a_check_carries_the_balance_left_by_earlier_months(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    october = datetime(2026, 10, 1, tzinfo=UTC)
    document = metered_document()
    document["plans"]["prepaid"] = PREPAID
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, plan="prepaid", starts_at=iso(october))
    backend = await create_key(app, scopes=["check"])
    await grant(client, admin, "20.00", granted_at=october)
    await use(app, "oct", 1500, october + timedelta(days=9))  # October draws 15.00
    assert (await _credits(client, backend))["balance"] == "5.00"
    assert (await _check(client, backend, "api"))["reason"] == "ok"
    # 500 calls this month spend the 5.00 left.
    assert (await send(client, backend, [event("now", data={"count": 500})])).status_code == 200
    assert (await _check(client, backend, "api"))["reason"] == "credits_exhausted"
    consume = await client.post(
        "/v1/check", json={"customer": "acme", "feature": "api", "consume": 1}, headers=backend
    )
    assert consume.status_code == 200, consume.text
    assert consume.json()["reason"] == "credits_exhausted" and "consumed" not in consume.json()
