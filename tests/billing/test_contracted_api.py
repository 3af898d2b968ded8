"""Bought quantities and a trial's conversion, from API calls to invoice lines (October 2026,
a closed month of 31 days: 31.00 a month is 1.00 a day; amounts worked by hand below)."""

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
from tests.factories.licensing import licensing_document
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import assign, register

OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
PERIOD = "2026-10"


async def _shift(app: Any, sql: str, **params: Any) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(sql), params)


async def _lines(
    client: httpx.AsyncClient, finance: dict[str, str], contract_id: str
) -> tuple[list[tuple[str, Decimal, Decimal]], dict[str, Any]]:
    response = await client.get(
        f"/v1/contracts/{contract_id}/invoice-preview", params={"period": PERIOD}, headers=finance
    )
    assert response.status_code == 200, response.text
    invoice = response.json()
    return [
        (line["code"], Decimal(line["quantity"]), Decimal(line["amount"]))
        for line in invoice["lines"]
    ], invoice


async def test_bought_seats_and_licences_bill_the_deal_and_the_overage(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, licensing_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client,
        admin,
        plan="licensed",
        starts_at=iso(OCTOBER),
        quantities={"seats": 5, "instances": 2},
    )
    backend = await create_key(app, scopes=["check"])
    for n in range(7):
        assert (await assign(client, backend, f"user{n}")).status_code == 201
    for n in range(3):
        assert (await register(client, backend, f"host-{n}")).status_code == 201
    # 7 seats all month; the 3 hosts live together for a day, Oct 2
    await _shift(app, "UPDATE seats SET assigned_at = :t", t=OCTOBER)
    await _shift(
        app,
        "UPDATE instances SET registered_at = :s, lease_expires_at = :e, ended_at = :e, "
        "end_reason = 'deregistered'",
        s=OCTOBER + timedelta(days=1),
        e=OCTOBER + timedelta(days=2),
    )
    lines, invoice = await _lines(client, finance, contract["id"])
    assert lines == [
        ("base", Decimal("1"), Decimal("310.00")),
        ("seats", Decimal("5"), Decimal("155.00")),  # 5 bought × 31.00
        ("seats_overage", Decimal("2"), Decimal("62.00")),  # peak 7 − 5, at the seat's 31.00
        ("burst", Decimal("0"), Decimal("0.00")),  # team's, inherited: never over 40
        ("instances", Decimal("72"), Decimal("0.00")),  # 3 × 24 h at instance_hour 0
        ("instance_licences", Decimal("2"), Decimal("62.00")),  # 2 bought × 31.00
        ("instance_licences_overage", Decimal("1"), Decimal("62.00")),  # peak 3 − 2, × 62.00
        ("meter:api_calls", Decimal("0"), Decimal("0.00")),
    ]
    assert Decimal(invoice["subtotal"]) == Decimal("651.00")
    overage = invoice["lines"][2]["source"]
    assert (overage["basis"], overage["held"], overage["contracted"]) == ("peak", "7", 5)


async def test_a_converted_trial_is_credited_to_the_conversion_and_paid_after(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, licensing_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client,
        admin,
        plan="basic",
        kind="trial",
        starts_at=iso(OCTOBER),
        ends_at=iso(datetime(2026, 11, 1, tzinfo=UTC)),
    )
    converted = await client.post(
        f"/v1/contracts/{contract['id']}/convert",
        json={
            "plan": "licensed",
            "quantities": {"seats": 5, "instances": 2},
            "at": iso(OCTOBER + timedelta(days=10)),
        },
        headers=admin,
    )
    assert converted.status_code == 200, converted.text
    lines, invoice = await _lines(client, finance, contract["id"])
    assert lines == [
        # the trial, Oct 1–11: 10 days of basic's 310.00, credited in full
        ("base", Decimal("0.322581"), Decimal("100.00")),
        ("credit:trial", Decimal("100.00"), Decimal("-100.00")),
        # paid from Oct 11: 21 days
        ("base", Decimal("0.677419"), Decimal("210.00")),
        ("seats", Decimal("5"), Decimal("105.00")),  # 5 × 31.00 × 21/31
        ("seats_overage", Decimal("0"), Decimal("0.00")),
        ("burst", Decimal("0"), Decimal("0.00")),
        ("instance_licences", Decimal("2"), Decimal("42.00")),  # 2 × 31.00 × 21/31
        ("instance_licences_overage", Decimal("0"), Decimal("0.00")),
        ("meter:api_calls", Decimal("0"), Decimal("0.00")),
    ]
    assert Decimal(invoice["subtotal"]) == Decimal("357.00")
    assert [line["source"]["revisions"] for line in invoice["lines"]] == [[1]] * 2 + [[2]] * 7
