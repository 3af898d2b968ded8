"""Through the API: a plan with volume tiers, a flat fee per tier, a cluster priced by the
hour apart from its weight, a monthly minimum and a setup fee, published, sold, used and
previewed; every amount worked by hand below (docs/billing.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, error_paths, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import register
from tests.factories.usage import event, metered_document, send

OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)  # closed months: the figures are final

USAGE_PLAN: dict[str, Any] = {
    "features": ["api"],
    "instances": {"limit": 10, "kinds": {"vm": 1, "cluster": 4}},
    "price": {
        "instance_hour": "0.05",
        "instances": {"kinds": {"cluster": "0.50"}},
        "minimum": "200.00",
        "one_time": {"setup": "300.00"},
        "meters": {
            "api_calls": {
                "mode": "volume",
                "included": 10000,
                "tiers": [
                    {"up_to": 100000, "unit": "0.002", "flat": "10.00"},
                    {"up_to": 1000000, "unit": "0.001", "flat": "25.00"},
                    {"unit": "0.0005"},
                ],
            }
        },
    },
}


async def _shift(app: Any, sql: str, **params: Any) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(sql), params)


async def _preview(
    client: httpx.AsyncClient, finance: dict[str, str], contract: str, period: str
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/contracts/{contract}/invoice-preview", params={"period": period}, headers=finance
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_volume_tiers_a_priced_kind_a_minimum_and_a_setup_fee(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    document = metered_document()
    document["plans"]["usage"] = USAGE_PLAN
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client, admin, customer="acme", plan="usage", starts_at=iso(OCTOBER)
    )
    backend = await create_key(app, scopes=["check"])
    assert (await register(client, backend, "cluster-1", kind="cluster")).status_code == 201
    # The cluster's lease: exactly 10 hours on October 2.
    await _shift(
        app,
        "UPDATE instances SET registered_at = :s, lease_expires_at = :e, ended_at = :e, "
        "end_reason = 'deregistered'",
        s=OCTOBER + timedelta(days=1),
        e=OCTOBER + timedelta(days=1, hours=10),
    )
    sent = await send(client, backend, [event(f"e{i}", data={"count": 50_000}) for i in range(3)])
    assert sent.json()["accepted"] == 3
    await _shift(app, "UPDATE usage_counters SET hour = :h", h=OCTOBER + timedelta(days=3))

    october = await _preview(client, finance, contract["id"], "2026-10")
    lines = {line["code"]: line for line in october["lines"]}
    assert list(lines) == [
        "base",
        "instances",
        "instances:cluster",
        "meter:api_calls",
        "minimum",
        "one_time:setup",
    ]
    amounts = {code: Decimal(line["amount"]) for code, line in lines.items()}
    # No base fee and no weighted instance-hours (the cluster is priced apart): 0.00 each.
    assert amounts["base"] == amounts["instances"] == Decimal("0.00")
    # The cluster at 0.50 an hour, unweighted: 10 × 0.50 (not 10 × 4 × 0.05 = 2.00).
    assert amounts["instances:cluster"] == Decimal("5.00")
    # 150,000 calls reach the second tier: all 140,000 billable at 0.001 plus its flat 25.00
    # (graduated would be 90,000 × 0.002 + 10 + 50,000 × 0.001 + 25 = 265.00).
    meter = lines["meter:api_calls"]
    assert amounts["meter:api_calls"] == Decimal("165.00")
    assert meter["source"]["mode"] == "volume" and meter["source"]["reached"] == 1
    assert [t["quantity"] for t in meter["source"]["tiers"]] == ["0", "140000", "0"]
    # The minimum tops 5.00 + 165.00 up to 200.00.
    assert amounts["minimum"] == Decimal("30.00")
    assert lines["minimum"]["source"]["committed"] == "170.00"
    # The setup fee: the contract started on the plan in October.
    assert amounts["one_time:setup"] == Decimal("300.00")
    assert lines["one_time:setup"]["source"]["due"] == "2026-10-01T00:00:00.000000Z"
    assert Decimal(october["subtotal"]) == Decimal("500.00")

    # November: nothing used, the setup fee not again, the whole minimum as the true-up.
    november = await _preview(client, finance, contract["id"], "2026-11")
    amounts = {line["code"]: Decimal(line["amount"]) for line in november["lines"]}
    assert "one_time:setup" not in amounts
    assert amounts["minimum"] == Decimal("200.00")
    assert amounts["meter:api_calls"] == Decimal("0.00")
    assert Decimal(november["subtotal"]) == Decimal("200.00")


async def test_publishing_a_price_for_a_kind_the_plan_refuses_names_its_path(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    document = metered_document()
    document["plans"]["usage"] = {
        **USAGE_PLAN,
        "price": {**USAGE_PLAN["price"], "instances": {"kinds": {"gpu": "2.00"}}},
    }
    response = await client.post("/v1/policies", json=document, headers=admin)
    assert response.status_code == 422, response.text
    assert error_paths(response) == ["plans.usage.price.instances.kinds.gpu"]


async def _amend(
    client: httpx.AsyncClient, admin: dict[str, str], contract: str, revision: int, **body: Any
) -> None:
    response = await client.patch(
        f"/v1/contracts/{contract}", json=body, headers={**admin, "If-Match": f'"{revision}"'}
    )
    assert response.status_code == 200, response.text


async def test_a_plan_change_charges_the_setup_fee_once_when_the_plan_is_first_entered(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    document = metered_document()
    document["plans"]["usage"] = USAGE_PLAN
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client, admin, customer="acme", plan="team", starts_at=iso(OCTOBER)
    )
    # team → usage on the 16th, back to team on the 21st, usage again on the 26th.
    for revision, (day, plan) in enumerate([(16, "usage"), (21, "team"), (26, "usage")], 1):
        at = iso(OCTOBER.replace(day=day))
        await _amend(client, admin, contract["id"], revision, plan=plan, effective_at=at)

    october = await _preview(client, finance, contract["id"], "2026-10")
    fees = [line for line in october["lines"] if line["code"].startswith("one_time:")]
    assert [(f["code"], f["amount"], f["source"]["revisions"]) for f in fees] == [
        ("one_time:setup", "300.00", [2])
    ]
    minimums = [line for line in october["lines"] if line["code"] == "minimum"]
    # Each usage group owes its share of the 200.00 minimum, nothing else being billed:
    # 5 days of 31 → 32.258… → 32.26, and 6 days → 38.709… → 38.71.
    assert [(m["amount"], m["source"]["revisions"]) for m in minimums] == [
        ("32.26", [2]),
        ("38.71", [4]),
    ]
