"""Negative quantities: refused on a `sum` meter unless it declares `corrections: true`.

Hand-worked: api_calls is a hard limit of 10 a month; every figure below is counted by hand,
not by the code under test.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from allotment.kit.clock import isoformat, utcnow
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import check
from tests.factories.usage import event, metered_document, send


async def _limited(client: httpx.AsyncClient, admin: dict[str, str], *, corrections: bool) -> None:
    """acme on `team` with api_calls (sum of data.count) limited to 10 a month, hard."""
    document = metered_document()
    if corrections:
        document["meters"]["api_calls"]["corrections"] = True
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    overrides = [{"meter": "api_calls", "limit": 10, "reason": "test"}]
    await create_contract(client, admin, customer="acme", plan="team", overrides=overrides)


@pytest.fixture
async def strict(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    await _limited(client, admin, corrections=False)
    return "acme"


@pytest.fixture
async def correctable(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    await _limited(client, admin, corrections=True)
    return "acme"


async def _total(client: httpx.AsyncClient, headers: dict[str, str], meter: str) -> Decimal:
    now = utcnow()
    response = await client.get(
        "/v1/customers/acme/usage",
        params={
            "meter": meter,
            "from": isoformat(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)),
            "to": isoformat(now + timedelta(hours=1)),
            "granularity": "month",
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return Decimal(response.json()["total"])


async def _consume(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> dict[str, Any]:
    response = await client.post(
        "/v1/check", json={"customer": "acme", "feature": "api", "consume": n}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_a_negative_quantity_on_a_sum_meter_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], strict: str
) -> None:
    assert (await send(client, backend, event("up", data={"count": 10}))).status_code == 200
    denied = await check(client, backend, "api")
    assert denied["reason"] == "usage_limit_reached"
    single = await send(client, backend, event("down", data={"count": -3}))
    assert single.status_code == 422, single.text
    assert single.headers["content-type"].startswith("application/problem+json")
    assert [e["path"] for e in single.json()["errors"]] == ["data.count"]
    assert "corrections" in single.json()["errors"][0]["message"]
    batch = await send(
        client,
        backend,
        [event("b0", data={"count": 0}), event("b1", data={"count": -0.5}), event("b2")],
    )
    body = batch.json()
    assert body["accepted"] == 2
    assert body["rejected"] == [{"index": 1, "errors": [single.json()["errors"][0]]}]
    # 10 + 0 + 1: nothing lowered the total, the hard limit stays closed.
    assert await _total(client, admin, "api_calls") == 11
    assert (await check(client, backend, "api"))["reason"] == "usage_limit_reached"


async def test_max_and_unique_count_meters_keep_accepting_negative_readings(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], strict: str
) -> None:
    batch = [
        event("j1", type="jobs.running", data={"n": -4}),
        event("j2", type="jobs.running", data={"n": -2}),
        event("l1", type="app.login", data={"user": -1}),
    ]
    body = (await send(client, backend, batch)).json()
    assert body["accepted"] == 3 and body["rejected"] == []
    assert await _total(client, admin, "peak_jobs") == -2  # a reading, not a quantity
    assert await _total(client, admin, "logins") == 1  # a value, counted once


async def test_consume_never_takes_a_negative_quantity(
    client: httpx.AsyncClient, backend: dict[str, str], correctable: str
) -> None:
    for n in (-3, 0):
        response = await client.post(
            "/v1/check", json={"customer": "acme", "feature": "api", "consume": n}, headers=backend
        )
        assert response.status_code == 422, response.text
        assert [e["path"] for e in response.json()["errors"]] == ["consume"]


async def test_a_correction_lowers_the_total_audited_and_leaves_refusals_refused(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    finance: dict[str, str],
    correctable: str,
) -> None:
    assert (await _consume(client, backend, 10))["allowed"] is True  # used 10 of 10
    refused = await _consume(client, backend, 1)
    assert refused["allowed"] is False and refused["reason"] == "usage_limit_reached"
    correction = event("fix-1", source="billing-fixes", data={"count": -3})
    answer = await send(client, backend, correction)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1 and answer.json()["rejected"] == []
    assert await _total(client, admin, "api_calls") == 7  # 10 - 3

    # The refused consume stays refused in the decision log.
    await app.state.checker.decisions.flush()
    logged = await client.get(
        "/v1/decisions", params={"customer": "acme", "feature": "api"}, headers=finance
    )
    decisions = {d["decision_id"]: d for d in logged.json()["items"]}
    assert decisions[refused["decision_id"]]["allowed"] is False
    assert decisions[refused["decision_id"]]["reason"] == "usage_limit_reached"

    # New consumes are judged on the corrected total: 7 + 3 fits, 10 + 1 does not.
    fits = await _consume(client, backend, 3)
    assert fits["allowed"] is True and fits["limit"]["used"] == 10
    assert (await _consume(client, backend, 1))["allowed"] is False

    # One audit record, in the correction's transaction, naming the event.
    audited = await client.get(
        "/v1/audit", params={"target": "customer:acme", "action": "usage.corrected"}, headers=admin
    )
    items = audited.json()["items"]
    assert len(items) == 1
    assert items[0]["actor"].startswith("api_key:")  # the backend key that sent it
    assert items[0]["after"] == {
        "source": "billing-fixes",
        "id": "fix-1",
        "meter": "api_calls",
        "quantity": -3,
        "time": correction["time"],
    }
    # A replay of the correction is a duplicate: no second audit record, no second -3.
    again = (await send(client, backend, correction)).json()
    assert again["accepted"] == 0 and again["duplicates"] == 1
    assert await _total(client, admin, "api_calls") == 10
    audited = await client.get(
        "/v1/audit", params={"target": "customer:acme", "action": "usage.corrected"}, headers=admin
    )
    assert len(audited.json()["items"]) == 1
    assert (await client.get("/v1/audit/verify", headers=admin)).json()["ok"] is True
