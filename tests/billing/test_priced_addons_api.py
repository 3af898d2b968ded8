"""An invoice preview through the API with priced add-ons, one bought three times, an add-on's
included units and a negotiated discount: every line as docs/billing.md works it by hand
("A worked example: priced add-ons")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import assign
from tests.factories.usage import event, metered_document, send

MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)  # a closed month: the invoice is final
PERIOD = "2026-10"


def priced_document() -> dict[str, Any]:
    document = metered_document()
    document["addons"].update(
        {
            "storage_pack": {"price": "25.00"},
            "seat_support": {"per_seat": {"unit": "4.00"}},
            "maintenance": {"percent": 20, "of": ["base", "seats"]},
            "growth_pack": {"price": "10.00", "raises": {"included": {"api_calls": 50_000}}},
        }
    )
    return document


async def _shift(app: Any, sql: str, **params: Any) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(sql), params)


async def test_priced_addons_with_a_quantity_and_a_negotiated_discount(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, priced_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client,
        admin,
        customer="acme",
        plan="team",
        starts_at=iso(MONTH_START),
        addons=[
            {"name": "storage_pack", "quantity": 3},
            "seat_support",
            "maintenance",
            "growth_pack",
        ],
        discount_percent=10,
        discount_reason="three-year commitment",
    )
    backend = await create_key(app, scopes=["check"])
    for n in range(7):
        assert (await assign(client, backend, f"user{n}")).status_code == 201
    await _shift(app, "UPDATE seats SET assigned_at = :t", t=MONTH_START)
    sent = await send(client, backend, [event(f"e{i}", data={"count": 50_000}) for i in range(3)])
    assert sent.json()["accepted"] == 3
    await _shift(app, "UPDATE usage_counters SET hour = :h", h=MONTH_START + timedelta(days=3))

    response = await client.get(
        f"/v1/contracts/{contract['id']}/invoice-preview",
        params={"period": PERIOD},
        headers=finance,
    )
    assert response.status_code == 200, response.text
    invoice = response.json()
    lines = {line["code"]: line for line in invoice["lines"]}
    amounts = {code: Decimal(line["amount"]) for code, line in lines.items()}
    assert list(lines) == [
        "base",
        "seats",
        "burst",
        "instances",
        "meter:api_calls",
        "addon:growth_pack",
        "addon:seat_support",
        "addon:storage_pack",
        "addon:maintenance",
        "discount:negotiated",
    ]
    assert amounts["base"] == Decimal("500.00")
    assert amounts["seats"] == Decimal("40.00")  # (7 − 5) × 20.00
    assert amounts["burst"] == amounts["instances"] == Decimal("0.00")
    # 150,000 calls; 100,000 included by team and 50,000 by growth_pack: nothing billable.
    assert amounts["meter:api_calls"] == Decimal("0.00")
    assert lines["meter:api_calls"]["source"]["included"] == 150_000
    assert lines["meter:api_calls"]["source"]["included_by_addons"] == 50_000
    assert amounts["addon:growth_pack"] == Decimal("10.00")
    assert amounts["addon:seat_support"] == Decimal("28.00")  # 7 seats × 4.00
    assert amounts["addon:storage_pack"] == Decimal("75.00")  # 3 × 25.00
    assert lines["addon:storage_pack"]["source"]["quantity"] == 3
    assert Decimal(lines["addon:storage_pack"]["quantity"]) == 3
    assert amounts["addon:maintenance"] == Decimal("108.00")  # 20 % of 500.00 + 40.00
    assert lines["addon:maintenance"]["source"]["lines"] == ["base", "seats"]
    # 10 % of 500 + 40 + 10 + 28 + 75 + 108 = 761.00
    assert amounts["discount:negotiated"] == Decimal("-76.10")
    assert lines["discount:negotiated"]["source"]["reason"] == "three-year commitment"
    assert Decimal(invoice["subtotal"]) == Decimal("684.90") == sum(amounts.values())
