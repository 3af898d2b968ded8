"""Through the API: a plan's monthly credits with a month of rollover, and a top-up, drawn by
two months of metered use; each invoice's `credits` line and the balance after it, worked
by hand (docs/billing.md, "Credit wallets")."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from tests.credits.helpers import PAYG, grant, use, wallet
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import metered_document

OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)
DECEMBER = datetime(2026, 12, 1, tzinfo=UTC)

CREDITED = {
    **PAYG,
    "price": {
        "base": "10.00",  # not a usage line: the wallet does not pay it
        **PAYG["price"],
        "credits": {"monthly": "50.00", "rollover": 1},
    },
}


async def _preview(
    client: httpx.AsyncClient, finance: dict[str, str], contract: str, period: str
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/contracts/{contract}/invoice-preview", params={"period": period}, headers=finance
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _amounts(invoice: dict[str, Any]) -> dict[str, str]:
    return {line["code"]: line["amount"] for line in invoice["lines"]}


async def test_monthly_credits_roll_over_a_month_and_a_top_up_pays_the_rest(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    document = metered_document()
    document["plans"]["credited"] = CREDITED
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    contract = (await create_contract(client, admin, plan="credited", starts_at=iso(OCTOBER)))["id"]
    await use(app, "oct", 3000, OCTOBER + timedelta(days=9))  # 30.00
    await use(app, "nov", 9000, NOVEMBER + timedelta(days=9))  # 90.00

    # October: the month's grant (50.00, valid to the end of November) pays the 30.00 of
    # calls, not the base fee; 20.00 is left.
    october = await _preview(client, finance, contract, "2026-10")
    assert _amounts(october) == {"base": "10.00", "meter:api_calls": "30.00", "credits": "-30.00"}
    line = october["lines"][-1]
    assert line["source"]["grants"] == [
        {"grant": "plan:2026-10", "kind": "plan", "amount": "30.00"}
    ]
    assert line["source"]["lines"] == ["meter:api_calls"]
    assert line["source"]["balance_after"] == "20.00"
    assert october["subtotal"] == "10.00"

    # November: 90.00 of calls; October's 20.00 first (it expires sooner), then November's
    # 50.00; 20.00 is billed.
    november = await _preview(client, finance, contract, "2026-11")
    assert _amounts(november)["credits"] == "-70.00"
    line = november["lines"][-1]
    assert [(g["grant"], g["amount"]) for g in line["source"]["grants"]] == [
        ("plan:2026-10", "20.00"),
        ("plan:2026-11", "50.00"),
    ]
    assert line["source"]["uncovered"] == "20.00" and line["source"]["balance_after"] == "0.00"
    assert november["subtotal"] == "30.00"  # 10.00 base + 20.00 of calls

    # A top-up of 100.00 on November 15 pays November's remaining 20.00 too.
    await asyncio.sleep(1.1)  # recorded after the preview above was taken (as_of, a second)
    await grant(client, admin, "100.00", granted_at=NOVEMBER + timedelta(days=14))
    again = await client.get(
        f"/v1/contracts/{contract}/invoice-preview",
        params={"period": "2026-11", "as_of": november["as_of"]},
        headers=finance,
    )
    assert again.json() == november  # as of then, the top-up was not recorded: unchanged
    november = await _preview(client, finance, contract, "2026-11")
    line = november["lines"][-1]
    assert line["amount"] == "-90.00" and line["source"]["balance_after"] == "80.00"
    assert [g["amount"] for g in line["source"]["grants"]] == ["20.00", "50.00", "20.00"]
    assert november["subtotal"] == "10.00"
    # October is unchanged: the top-up came after it.
    assert (await _preview(client, finance, contract, "2026-10"))["subtotal"] == "10.00"

    # December to date: nothing used; December's grant joins the top-up's 80.00.
    state = await wallet(client, finance)
    assert Decimal(state["balance"]) == Decimal("130.00")
    grants = {g["id"]: g for g in state["grants"]}
    assert grants["plan:2026-12"]["expires_at"].startswith("2027-02-01")
    assert (
        grants["plan:2026-10"]["drawn"] == "50.00" and grants["plan:2026-10"]["expired"] == "0.00"
    )
    december = await _preview(client, finance, contract, "2026-12")
    assert "credits" not in _amounts(december)  # nothing applicable to pay yet


async def test_a_contract_without_credits_or_grants_has_no_credits_line(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    document = metered_document()
    document["plans"]["payg"] = PAYG
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    contract = (await create_contract(client, admin, plan="payg", starts_at=iso(OCTOBER)))["id"]
    october = await _preview(client, finance, contract, "2026-10")
    assert all(line["code"] != "credits" for line in october["lines"])
