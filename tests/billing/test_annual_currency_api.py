"""Through the API: an annual plan previewed month by month across its anniversary, contracts
billed in EUR and in JPY (0 minor digits), the currency's 422s and orphans, and a check
refused at a yearly limit (docs/billing.md, "Annual terms" and "Currencies")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from allotment.contracts.years import anniversary
from allotment.kit.clock import utcnow
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, error_paths, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import check
from tests.factories.usage import event, ingest_at, metered_document

# The contract starts at 10:30: its anniversary cuts the hour 10:00–11:00 in two.
STARTS = datetime(2025, 3, 15, 10, 30, tzinfo=UTC)

ANNUAL_PLAN: dict[str, Any] = {
    "features": ["api"],
    "limits": {"api_calls": {"limit": 1000000, "period": "year"}},
    "price": {
        "base": "1200.00",
        "interval": "year",
        "meters": {"api_calls": {"included": 10000, "period": "year", "tiers": [{"unit": "0.01"}]}},
    },
}


def annual_document() -> dict[str, Any]:
    document = metered_document()
    document["plans"]["annual"] = ANNUAL_PLAN
    return document


async def _preview(
    client: httpx.AsyncClient, finance: dict[str, str], contract: str, period: str
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/contracts/{contract}/invoice-preview", params={"period": period}, headers=finance
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _lines(invoice: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [line for line in invoice["lines"] if line["code"] == code]


async def test_an_annual_contract_previewed_across_its_anniversary_month(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, annual_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client, admin, customer="acme", plan="annual", starts_at=iso(STARTS)
    )
    calls = [
        event("y1a", time=datetime(2025, 6, 10, tzinfo=UTC), data={"count": 8000}),
        # 10:10 on the anniversary day: still the first contract year (it ends at 10:30).
        event("y1b", time=datetime(2026, 3, 15, 10, 10, tzinfo=UTC), data={"count": 3000}),
        # 10:50: the second year's, against a fresh allowance.
        event("y2a", time=datetime(2026, 3, 15, 10, 50, tzinfo=UTC), data={"count": 500}),
    ]
    assert (await ingest_at(app, calls, received=datetime(2026, 4, 1, tzinfo=UTC))).accepted == 3

    # March 2025: the first year's fee in full, nothing over the allowance.
    first = await _preview(client, finance, contract["id"], "2025-03")
    (base,) = _lines(first, "base")
    assert (base["quantity"], base["unit"], base["amount"]) == ("1", "year", "1200.00")
    assert base["source"]["contract_year"] == 1
    assert base["source"]["due"] == "2025-03-15T10:30:00.000000Z"

    # June 2025: 8,000 of the year's 10,000; no fee.
    june = await _preview(client, finance, contract["id"], "2025-06")
    assert _lines(june, "base") == []
    (meter,) = _lines(june, "meter:api_calls")
    assert (meter["amount"], meter["source"]["year_to_date"]) == ("0.00", "8000")

    # March 2026, the anniversary month: year 1 crosses its allowance (11,000: 1,000 × 0.01
    # = 10.00), year 2's fee falls due at 10:30 on the 15th, and its 500 calls are included.
    march = await _preview(client, finance, contract["id"], "2026-03")
    (base,) = _lines(march, "base")
    assert (base["amount"], base["source"]["contract_year"]) == ("1200.00", 2)
    assert base["source"]["year_start"] == "2026-03-15T10:30:00.000000Z"
    assert base["source"]["year_end"] == "2027-03-15T10:30:00.000000Z"
    assert [
        (m["source"]["contract_year"], m["quantity"], m["amount"], m["source"]["year_to_date"])
        for m in _lines(march, "meter:api_calls")
    ] == [(1, "1000", "10.00", "11000"), (2, "0", "0.00", "500")]
    assert Decimal(march["subtotal"]) == Decimal("1210.00")

    # Reconciliation measures the yearly limit over each contract year the month touches.
    response = await client.get(
        f"/v1/contracts/{contract['id']}/reconciliation",
        params={"period": "2026-03"},
        headers=finance,
    )
    assert response.status_code == 200, response.text
    (limited,) = response.json()["meters"]
    assert (limited["period"], limited["used"], limited["status"]) == ("year", "11000", "within")

    # April 2026: no fee again until the next anniversary.
    april = await _preview(client, finance, contract["id"], "2026-04")
    assert _lines(april, "base") == []
    assert Decimal(april["subtotal"]) == Decimal("0.00")


def currency_document() -> dict[str, Any]:
    document = metered_document()
    team = document["plans"]["team"]
    team["price_lists"] = {
        "EUR": {
            "base": "460.00",
            "seat": {"unit": "18.00", "included": 5},
            "meters": {"api_calls": {"included": 100000, "tiers": [{"unit": "0.0009"}]}},
        },
        "JPY": {
            "base": "75000",
            "seat": {"unit": "3000", "included": 5},
            "meters": {"api_calls": {"included": 100000, "tiers": [{"unit": "0.15"}]}},
        },
    }
    document["addons"]["audit_pack"]["price_lists"] = {"EUR": "90.00", "JPY": "15000"}
    return document


OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)


async def test_a_eur_contract_is_invoiced_in_eur_and_a_jpy_one_with_no_minor_digits(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, currency_document())
    await create_customer(client, admin, key="acme")
    await create_customer(client, admin, key="kyoto")
    eur = await create_contract(
        client,
        admin,
        customer="acme",
        plan="team",
        starts_at=iso(OCTOBER),
        currency="EUR",
        addons=["audit_pack"],
    )
    assert eur["currency"] == "EUR"
    # Starts on the 11th: 21 of October's 31 days.
    jpy = await create_contract(
        client,
        admin,
        customer="kyoto",
        plan="team",
        starts_at=iso(OCTOBER + timedelta(days=10)),
        currency="JPY",
        addons=["audit_pack"],
    )

    invoice = await _preview(client, finance, eur["id"], "2026-10")
    assert invoice["currency"] == "EUR"
    amounts = {line["code"]: line["amount"] for line in invoice["lines"]}
    assert (amounts["base"], amounts["addon:audit_pack"]) == ("460.00", "90.00")
    assert _lines(invoice, "base")[0]["unit_price"] == "460.00"
    assert Decimal(invoice["subtotal"]) == Decimal("550.00")

    invoice = await _preview(client, finance, jpy["id"], "2026-10")
    assert invoice["currency"] == "JPY"
    amounts = {line["code"]: line["amount"] for line in invoice["lines"]}
    # 75,000 × 21/31 = 50,806.45… → 50806; 15,000 × 21/31 = 10,161.29… → 10161.
    assert (amounts["base"], amounts["addon:audit_pack"]) == ("50806", "10161")
    assert invoice["subtotal"] == "60967"


async def test_a_currency_without_a_price_list_is_refused_with_its_path(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, currency_document())
    await create_customer(client, admin, key="acme")
    refused = await create_contract(
        client, admin, customer="acme", plan="team", currency="GBP", expect=422
    )
    assert error_paths(refused) == ["currency"]
    # An add-on with a price and no price list in the contract's currency.
    document = currency_document()
    del document["addons"]["audit_pack"]["price_lists"]["JPY"]
    await publish_policy(client, admin, document)
    refused = await create_contract(
        client,
        admin,
        customer="acme",
        plan="team",
        currency="JPY",
        addons=["audit_pack"],
        expect=422,
    )
    assert error_paths(refused) == ["addons[0]"]

    contract = await create_contract(client, admin, customer="acme", plan="team", currency="EUR")
    headers = {**admin, "If-Match": f'"{contract["revision"]}"'}
    # A plan with no EUR price list, and the currency itself (fixed at creation).
    for body, path in (({"plan": "starter"}, "currency"), ({"currency": "JPY"}, "currency")):
        response = await client.patch(f"/v1/contracts/{contract['id']}", json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert error_paths(response) == [path]


async def test_a_publish_that_drops_a_live_contracts_price_list_orphans_it(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, currency_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, customer="acme", plan="team", currency="EUR")
    document = currency_document()
    del document["plans"]["team"]["price_lists"]["EUR"]
    created = await client.post("/v1/policies", json=document, headers=admin)
    version = created.json()["version"]

    refused = await client.post(f"/v1/policies/{version}/publish", headers=admin)

    assert refused.status_code == 409, refused.text
    (orphan,) = refused.json()["orphaned"]
    assert orphan["contract"] == contract["id"]
    assert [p["path"] for p in orphan["problems"]] == ["currency"]


async def test_a_check_is_refused_at_a_yearly_limit_counted_over_the_contract_year(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    document = annual_document()
    document["plans"]["annual"]["limits"]["api_calls"]["limit"] = 10000
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    now = utcnow()
    starts = now - timedelta(days=60)
    await create_contract(client, admin, customer="acme", plan="annual", starts_at=iso(starts))
    backend = await create_key(app, scopes=["check"])

    # 6,000 calls in an earlier calendar month of the contract year, 3,000 this hour: under
    # the year's 10,000, and this month alone would be too.
    earlier = [event("old", time=now - timedelta(days=35), data={"count": 6000})]
    recent = [event("new", time=now - timedelta(seconds=5), data={"count": 3000})]
    assert (await ingest_at(app, [*earlier, *recent], received=now)).accepted == 2
    allowed = await check(client, backend, "api")
    assert allowed["allowed"] is True, allowed
    assert allowed["limit"]["used"] == 9000
    assert allowed["limit"]["period_end"] == iso(anniversary(starts, 1))

    # A consume reads the year under the customer's lock: 1,001 more does not fit, 1,000 does.
    over = await client.post(
        "/v1/check", json={"customer": "acme", "feature": "api", "consume": 1001}, headers=backend
    )
    assert over.json()["allowed"] is False and over.json()["limit"]["used"] == 9000
    fits = await check(client, backend, "api", consume=1000)
    assert fits["allowed"] is True and fits["limit"]["used"] == 10000
    refused = await check(client, backend, "api")
    assert refused["allowed"] is False
    assert refused["reason"] == "usage_limit_reached"
    assert refused["limit"]["used"] == 10000
    assert "this year" in refused["detail"]


async def test_a_wallet_is_in_the_currency_the_customer_is_billed_in(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, currency_document())
    await create_customer(client, admin, key="kyoto")
    await create_contract(
        client, admin, customer="kyoto", plan="team", starts_at=iso(OCTOBER), currency="JPY"
    )
    cents = await client.post(
        "/v1/customers/kyoto/credits", json={"amount": "100.50"}, headers=admin
    )
    assert cents.status_code == 422 and error_paths(cents) == ["amount"]
    assert "JPY allows at most 0" in cents.text
    created = await client.post(
        "/v1/customers/kyoto/credits", json={"amount": "5000"}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert created.json()["currency"] == "JPY"
    wallet = (await client.get("/v1/customers/kyoto/credits", headers=finance)).json()
    assert (wallet["currency"], Decimal(wallet["balance"])) == ("JPY", Decimal(5000))
