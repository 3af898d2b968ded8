"""From API calls to invoice lines: seats, instances and events created through the API give
exactly the invoice the policy says (amounts worked by hand below), CSV included."""

from __future__ import annotations

import csv
import io
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
from tests.factories.seats import assign, register
from tests.factories.usage import event, metered_document, send

# A closed month, so the invoice is final and the figures exact.
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
PERIOD = "2026-10"


async def _shift(app: Any, sql: str, **params: Any) -> None:
    """Move allocation times into the closed month (the API stamps them with now)."""
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(sql), params)


async def test_invoice_preview_from_api_calls(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client, admin, customer="acme", plan="team", starts_at=iso(MONTH_START)
    )
    backend = await create_key(app, scopes=["check"])
    for n in range(7):
        assert (await assign(client, backend, f"user{n}")).status_code == 201
    assert (await register(client, backend, "vm-1")).status_code == 201
    # All 7 seats held the whole month; the vm's lease: exactly 10 hours on Oct 2.
    await _shift(app, "UPDATE seats SET assigned_at = :t", t=MONTH_START)
    await _shift(
        app,
        "UPDATE instances SET registered_at = :s, lease_expires_at = :e, ended_at = :e, "
        "end_reason = 'deregistered'",
        s=MONTH_START + timedelta(days=1),
        e=MONTH_START + timedelta(days=1, hours=10),
    )
    # Events can only be sent within the late window, so counters are written for October
    # through the same code path by sending them now and moving their hour.
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
    assert invoice["currency"] == "USD" and invoice["period"] == PERIOD
    assert invoice["customer"] == "acme" and invoice["to_date"] is False
    amounts = {line["code"]: Decimal(line["amount"]) for line in invoice["lines"]}
    # team: base 500.00 for the whole month; seats peak 7, 5 included → 2 × 20.00 = 40.00;
    # instances 10 h × weight 1 × 0.05 = 0.50; api_calls 150,000, 100,000 included, then
    # 50,000 × 0.001 = 50.00 (first tier up to 1,000,000).
    assert amounts["base"] == Decimal("500.00")
    assert amounts["seats"] == Decimal("40.00")
    assert amounts["instances"] == Decimal("0.50")
    assert amounts["meter:api_calls"] == Decimal("50.00")
    assert Decimal(invoice["subtotal"]) == sum(amounts.values())
    meter_line = next(line for line in invoice["lines"] if line["code"] == "meter:api_calls")
    assert meter_line["source"]["events"] == 3

    again = await client.get(
        f"/v1/contracts/{contract['id']}/invoice-preview",
        params={"period": PERIOD},
        headers=finance,
    )
    assert again.json()["lines"] == invoice["lines"]  # deterministic

    as_csv = await client.get(
        f"/v1/contracts/{contract['id']}/invoice-preview",
        params={"period": PERIOD},
        headers={**finance, "Accept": "text/csv"},
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {r["code"]: Decimal(r["amount"]) for r in rows} == amounts

    listed = await client.get("/v1/invoice-preview", params={"period": PERIOD}, headers=finance)
    assert listed.status_code == 200
    assert [(i["contract"], Decimal(i["subtotal"])) for i in listed.json()["items"]] == [
        (contract["id"], Decimal(invoice["subtotal"]))
    ]


async def test_period_rules(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, customer="acme", plan="team")
    url = f"/v1/contracts/{contract['id']}/invoice-preview"
    future = await client.get(url, params={"period": "2099-01"}, headers=finance)
    assert future.status_code == 422 and future.json()["errors"][0]["path"] == "query.period"
    # Every bad period at the same path, whether it is no month or not written YYYY-MM.
    for wrong in ("2026-13", "2026-1", "november"):
        bad = await client.get(url, params={"period": wrong}, headers=finance)
        assert bad.status_code == 422 and error_paths(bad) == ["query.period"], bad.text
    # One form for a query parameter, whoever finds the fault: no period, an as_of without an
    # offset (FastAPI) or before the period (the service).
    absent = await client.get(url, headers=finance)
    assert error_paths(absent) == ["query.period"]
    for as_of in ("2026-10-20T00:00:00", "2000-01-01T00:00:00Z"):
        early = await client.get(url, params={"period": "2026-10", "as_of": as_of}, headers=finance)
        assert early.status_code == 422 and error_paths(early) == ["query.as_of"], early.text
    missing = await client.get(
        "/v1/contracts/ctr_nope/invoice-preview", params={"period": "2026-10"}, headers=finance
    )
    assert missing.status_code == 404
    current = await client.get(
        url, params={"period": datetime.now(UTC).strftime("%Y-%m")}, headers=finance
    )
    assert current.status_code == 200 and current.json()["to_date"] is True


async def test_reconciliation_shows_a_downgrade_below_held_seats(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str], app: Any
) -> None:
    from tests.factories.seats import amend_seats

    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, customer="acme", plan="team")
    backend = await create_key(app, scopes=["check"])
    for n in range(6):
        assert (await assign(client, backend, f"u{n}")).status_code == 201
    await amend_seats(client, admin, limit=4, burst={"extra": 0})
    response = await client.get(
        f"/v1/contracts/{contract['id']}/reconciliation",
        params={"period": datetime.now(UTC).strftime("%Y-%m")},
        headers=finance,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    latest = report["seats"][-1]
    assert latest["limit"] == 4 and latest["peak"] == 6
    assert any("over the limit of 4" in d for d in report["discrepancies"])


async def test_the_current_month_charges_the_whole_months_fees_and_usage_to_date(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client, admin, customer="acme", plan="team", starts_at=iso(first), addons=["audit_pack"]
    )
    response = await client.get(
        f"/v1/contracts/{contract['id']}/invoice-preview",
        params={"period": now.strftime("%Y-%m")},
        headers=finance,
    )
    invoice = response.json()
    amounts = {line["code"]: Decimal(line["amount"]) for line in invoice["lines"]}
    assert invoice["to_date"] is True
    assert amounts["base"] == Decimal("500.00")  # the whole month's, not to date
    assert amounts["addon:audit_pack"] == Decimal("100.00")
    assert amounts.get("seats", Decimal(0)) == 0 and amounts.get("instances", Decimal(0)) == 0


async def test_a_backdated_contract_names_what_could_not_be_priced(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    # Version 1 has no plan 'late'; version 2 adds it, and a contract on it is dated back to
    # October: October was under version 1, so nothing of it can be priced — and says so.
    document = metered_document()
    await publish_policy(client, admin, document)
    document["plans"]["late"] = {"features": [], "price": {"base": "31.00"}}
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client, admin, customer="acme", plan="late", starts_at=iso(MONTH_START)
    )
    response = await client.get(
        f"/v1/contracts/{contract['id']}/invoice-preview",
        params={"period": PERIOD},
        headers=finance,
    )
    assert response.status_code == 200, response.text
    invoice = response.json()
    assert invoice["lines"] == [] and Decimal(invoice["subtotal"]) == 0
    assert [(u["start"], u["end"]) for u in invoice["unpriced"]] == [
        ("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")
    ]
    assert "plan 'late' is not in policy version 1" in invoice["unpriced"][0]["reason"]
