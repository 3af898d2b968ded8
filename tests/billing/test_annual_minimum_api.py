"""Through the API: a minimum per contract year previewed month by month, its true-up summing
the earlier months of the year as each month's own preview prices them (docs/billing.md,
"minimum")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import event, ingest_at, metered_document


async def test_the_year_end_true_up_counts_every_month_of_the_contract_year(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    document = metered_document()
    document["plans"]["committed"] = {
        "features": ["api"],
        "price": {
            "base": "100.00",
            "minimum": "1000.00",
            "minimum_period": "year",
            "meters": {"api_calls": {"included": 0, "tiers": [{"unit": "0.01"}]}},
        },
    }
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    # A three-month contract: its true-up falls at its end, sooner than the year's.
    contract = await create_contract(
        client,
        admin,
        customer="acme",
        plan="committed",
        starts_at=iso(datetime(2025, 8, 1, tzinfo=UTC)),
        ends_at=iso(datetime(2025, 11, 1, tzinfo=UTC)),
    )
    calls = [event("c1", time=datetime(2025, 9, 5, tzinfo=UTC), data={"count": 12_000})]
    assert (await ingest_at(app, calls, received=datetime(2025, 9, 6, tzinfo=UTC))).accepted == 1

    async def minimum(period: str) -> dict[str, Any]:
        response = await client.get(
            f"/v1/contracts/{contract['id']}/invoice-preview",
            params={"period": period},
            headers=finance,
        )
        assert response.status_code == 200, response.text
        (line,) = [line for line in response.json()["lines"] if line["code"] == "minimum"]
        return line  # type: ignore[no-any-return]

    august = await minimum("2025-08")
    assert (august["amount"], august["source"]["committed_to_date"]) == ("0.00", "100.00")
    september = await minimum("2025-09")  # 100.00 + 12,000 × 0.01
    assert (september["amount"], september["source"]["remaining"]) == ("0.00", "680.00")
    october = await minimum("2025-10")  # 1,000 − (100 + 220 + 100)
    assert (october["amount"], october["source"]["trued_up"]) == ("580.00", True)
    assert october["source"]["due"] == "2025-11-01T00:00:00.000000Z"
