"""Through the API: grants and top-ups recorded, validated and audited; the wallet read at a
chosen instant, drawn soonest-expiry first by each month's priced usage (docs/billing.md,
"Credit wallets")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from tests.credits.helpers import PAYG, grant, recorded_at, sql, use, wallet
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, error_paths, iso, state_version
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import metered_document

OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)


async def _payg(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    document = metered_document()
    document["plans"]["payg"] = PAYG
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    return await create_contract(client, admin, plan="payg", starts_at=iso(OCTOBER))


async def test_a_grant_is_recorded_audited_and_bumps_the_customer(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await _payg(client, admin)
    before = await state_version(app)
    created = await grant(
        client,
        admin,
        "100.00",
        reason="prepaid pack",
    )
    assert created["id"].startswith("cr_") and created["kind"] == "purchased"
    assert created["amount"] == "100.00" and created["currency"] == "USD"
    assert created["expires_at"] is None and created["reason"] == "prepaid pack"
    assert await state_version(app) == before + 1
    records = await client.get("/v1/audit", params={"action": "credits.granted"}, headers=admin)
    assert records.status_code == 200, records.text
    found = [r for r in records.json()["items"] if r["action"] == "credits.granted"]
    assert found and found[0]["target_key"] == "acme" and found[0]["after"]["id"] == created["id"]
    state = await wallet(client, finance)
    assert Decimal(state["balance"]) == Decimal("100.00")
    assert [g["id"] for g in state["grants"]] == [created["id"]]


async def test_idempotency_key_replays_the_grant(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await _payg(client, admin)
    headers = {**admin, "Idempotency-Key": "topup-1"}
    body = {"amount": "25.00"}
    first = await client.post("/v1/customers/acme/credits", json=body, headers=headers)
    again = await client.post("/v1/customers/acme/credits", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert len((await wallet(client, finance))["grants"]) == 1


async def test_bad_grants_name_their_paths(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _payg(client, admin)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"amount": "0"}, "amount"),
        ({"amount": "1.005"}, "amount"),  # USD has two decimal places
        ({"amount": 10.5}, "amount"),  # a float loses cents: amounts are strings
        ({"amount": "-5.00"}, "amount"),
        ({"amount": "1000000000000.01"}, "amount"),  # above 10^12: a unit mistake
        (
            {"amount": "5.00", "granted_at": iso(NOVEMBER), "expires_at": iso(OCTOBER)},
            "expires_at",
        ),
        ({"amount": "5.00", "kind": "plan"}, "kind"),
    ]
    for body, path in cases:
        response = await client.post("/v1/customers/acme/credits", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert error_paths(response) == [path], body


async def test_only_admin_grants_and_a_customer_key_reads_its_own_wallet(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await _payg(client, admin)
    await create_customer(client, admin, key="other")
    response = await client.post(
        "/v1/customers/acme/credits", json={"amount": "5.00"}, headers=finance
    )
    assert response.status_code == 403
    own = await create_key(app, scopes=["customer:acme"])
    assert (await client.get("/v1/customers/acme/credits", headers=own)).status_code == 200
    assert (await client.get("/v1/customers/other/credits", headers=own)).status_code == 403
    missing = await client.get("/v1/customers/nobody/credits", headers=finance)
    assert missing.status_code == 404


async def test_usage_draws_the_soonest_expiry_first_and_the_rest_expires(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await _payg(client, admin)
    # A promotion of 20.00 for October, and a top-up of 50.00 that never expires.
    promo = await grant(
        client,
        admin,
        "20.00",
        kind="granted",
        granted_at=OCTOBER,
        expires_at=NOVEMBER,
        reason="launch promotion",
    )
    topup = await grant(client, admin, "50.00", granted_at=OCTOBER + timedelta(days=2))
    await recorded_at(app, OCTOBER)
    # 1,200 calls on October 10: 12.00, paid by the promotion (it expires first).
    await use(app, "e1", 1200, OCTOBER + timedelta(days=9))

    mid_october = await wallet(client, finance, as_of=OCTOBER + timedelta(days=20))
    # The month to date is drawn at as_of: 12.00 of the promotion.
    assert Decimal(mid_october["balance"]) == Decimal("58.00")
    grants = {g["id"]: g for g in mid_october["grants"]}
    assert grants[promo["id"]]["drawn"] == "12.00" and grants[promo["id"]]["remaining"] == "8.00"
    assert grants[topup["id"]]["remaining"] == "50.00"
    assert [(d["grant"], d["amount"]) for d in mid_october["draws"]] == [(promo["id"], "12.00")]

    # In November the promotion has expired with 8.00 unused; 700 calls (7.00) in November
    # come from the top-up.
    await use(app, "e2", 700, NOVEMBER + timedelta(days=4))
    after = await wallet(client, finance, as_of=NOVEMBER + timedelta(days=10))
    grants = {g["id"]: g for g in after["grants"]}
    assert grants[promo["id"]]["expired"] == "8.00" and grants[promo["id"]]["remaining"] == "0.00"
    assert grants[topup["id"]]["drawn"] == "7.00" and grants[topup["id"]]["remaining"] == "43.00"
    assert Decimal(after["balance"]) == Decimal("43.00")
    assert [(c["period"], c["amount"], c["uncovered"]) for c in after["charges"]] == [
        ("2026-10", "12.00", "0.00"),
        ("2026-11", "7.00", "0.00"),
    ]
    assert after["charges"][0]["lines"] == ["meter:api_calls"]


async def test_a_wallet_read_before_a_grant_was_recorded_does_not_see_it(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await _payg(client, admin)
    await grant(client, admin, "30.00", granted_at=OCTOBER)
    await recorded_at(app, OCTOBER)
    await sql(app, "UPDATE credit_grants SET created_at = :t", t=NOVEMBER)
    assert (await wallet(client, finance, as_of=OCTOBER + timedelta(days=5)))["grants"] == []
    assert (await wallet(client, finance, as_of=NOVEMBER))["balance"] == "30.00"
    future = await client.get(
        "/v1/customers/acme/credits",
        params={"as_of": iso(datetime.now(UTC) + timedelta(days=1))},
        headers=finance,
    )
    assert future.status_code == 422 and error_paths(future) == ["query.as_of"]
