"""Metered checks: hard and soft limits, warnings, tenant quotas, and atomic consume."""

from __future__ import annotations

import asyncio
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


@pytest.fixture
async def limited(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """acme on `team` with api_calls limited to 10 (hard) and exports to 2 (soft)."""
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    overrides = [
        {"meter": "api_calls", "limit": 10, "reason": "test"},
        {"meter": "exports", "limit": 2, "reason": "test"},
    ]
    await create_contract(client, admin, customer="acme", plan="team", overrides=overrides)
    return "acme"


async def _consume(
    client: httpx.AsyncClient, headers: dict[str, str], n: int, feature: str = "api", **body: Any
) -> httpx.Response:
    return await client.post(
        "/v1/check",
        json={"customer": "acme", "feature": feature, "consume": n, **body},
        headers=headers,
    )


async def _month_total(client: httpx.AsyncClient, admin: dict[str, str], meter: str) -> Decimal:
    now = utcnow()
    response = await client.get(
        "/v1/customers/acme/usage",
        params={
            "meter": meter,
            "from": isoformat(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)),
            "to": isoformat(now + timedelta(hours=1)),
            "granularity": "month",
        },
        headers=admin,
    )
    assert response.status_code == 200, response.text
    return Decimal(response.json()["total"])


async def test_hard_limit_warns_at_80_percent_then_denies(
    client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    fresh = await check(client, backend, "api")
    assert fresh["allowed"] is True and fresh["warnings"] == []
    assert fresh["limit"]["meter"] == "api_calls" and fresh["limit"]["remaining"] == 10
    assert fresh["limit"]["enforcement"] == "hard" and fresh["limit"]["period_end"]
    await send(client, backend, event("a", data={"count": 8}))
    warned = await check(client, backend, "api")  # the ingesting worker sees it at once
    assert warned["allowed"] is True and warned["warnings"] == ["approaching_limit"]
    assert warned["limit"]["used"] == 8 and warned["limit"]["threshold"] == 0.8
    await send(client, backend, event("b", data={"count": 2}))
    denied = await check(client, backend, "api")
    assert denied["allowed"] is False and denied["reason"] == "usage_limit_reached"
    assert denied["limit"]["used"] == 10 and denied["limit"]["remaining"] == 0


async def test_the_entitlements_agree_with_a_check_over_a_hard_limit(
    client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    """Past a hard limit a check is refused, and the entitlements document says so too: the
    feature is not allowed, with the check's reason (it used to say `ok`)."""
    await send(client, backend, [event("a", data={"count": 12})])  # 12 of 10
    await send(client, backend, [event(f"x{i}", type="export.created") for i in range(3)])
    denied = await check(client, backend, "api")
    assert (denied["allowed"], denied["reason"]) == (False, "usage_limit_reached")
    soft = await check(client, backend, "exports")
    document = (await client.get("/v1/customers/acme/entitlements", headers=backend)).json()
    features = {f["feature"]: f for f in document["features"]}
    assert (features["api"]["allowed"], features["api"]["reason"]) == (False, "usage_limit_reached")
    assert (
        (features["exports"]["allowed"], features["exports"]["reason"])
        == (
            soft["allowed"],
            soft["reason"],
        )
        == (True, "soft_limit_exceeded")
    )
    assert features["reports"]["reason"] == "ok"  # unmetered: untouched
    assert document["limits"]["meters"]["api_calls"]["exhausted"] is True
    batch = await client.post(
        "/v1/check/batch",
        json={"customer": "acme", "features": sorted(features)},
        headers=backend,
    )
    decided = {d["feature"]: (d["allowed"], d["reason"]) for d in batch.json()["decisions"]}
    listed = {name: (f["allowed"], f["reason"]) for name, f in features.items()}
    # Every feature that needs no subject or instance is decided alike.
    plain = {n for n, f in features.items() if not f.get("seat_required")}
    plain -= {n for n, f in features.items() if f.get("instance_required")}
    assert {n: decided[n] for n in plain} == {n: listed[n] for n in plain}


async def test_soft_limit_allows_with_a_warning(
    client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    await send(client, backend, [event(f"x{i}", type="export.created") for i in range(3)])
    decision = await check(client, backend, "exports")
    assert decision["allowed"] is True and decision["reason"] == "soft_limit_exceeded"
    assert "soft_limit_exceeded" in decision["warnings"]
    assert "approaching_limit" in decision["warnings"]
    entitlements = (await client.get("/v1/customers/acme/entitlements", headers=backend)).json()
    exports = entitlements["limits"]["meters"]["exports"]
    assert exports["used"] == 3 and exports["limit"] == 2 and exports["exhausted"] is False


async def test_consume_is_atomic_and_never_passes_a_hard_limit(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], limited: str
) -> None:
    first = await _consume(client, backend, 4)
    assert first.status_code == 200, first.text
    assert first.json()["allowed"] is True and first.json()["consumed"] == 4
    too_much = (await _consume(client, backend, 7)).json()
    assert too_much["allowed"] is False and too_much["reason"] == "usage_limit_reached"
    assert too_much["limit"]["used"] == 4
    assert (await _consume(client, backend, 6)).json()["allowed"] is True
    assert (await check(client, backend, "api"))["reason"] == "usage_limit_reached"
    assert await _month_total(client, admin, "api_calls") == 10


async def test_a_retried_consume_with_its_key_counts_once(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], limited: str
) -> None:
    headers = {**backend, "Idempotency-Key": "consume-1"}
    first = await _consume(client, headers, 3)
    again = await _consume(client, headers, 3)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["decision_id"] == first.json()["decision_id"]
    assert await _month_total(client, admin, "api_calls") == 3


async def test_64_concurrent_consumes_stop_exactly_at_the_limit(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], limited: str
) -> None:
    responses = await asyncio.gather(*(_consume(client, backend, 1) for _ in range(64)))
    assert all(r.status_code == 200 for r in responses)
    allowed = [r for r in responses if r.json()["allowed"]]
    assert len(allowed) == 10
    assert {r.json()["reason"] for r in responses if not r.json()["allowed"]} == {
        "usage_limit_reached"
    }
    assert await _month_total(client, admin, "api_calls") == 10


async def test_consume_needs_a_summable_meter(
    client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    plain = await _consume(client, backend, 1, feature="reports")
    assert plain.status_code == 422 and plain.json()["errors"][0]["path"] == "consume"
    counted = await _consume(client, backend, 2, feature="exports")
    assert counted.status_code == 422
    assert (await _consume(client, backend, 1, feature="exports")).json()["allowed"] is True
    for odd in ("1", 1.0, True):  # a number of units, not text, a float or a boolean
        refused = await _consume(client, backend, odd, feature="exports")  # type: ignore[arg-type]
        assert refused.status_code == 422 and refused.json()["errors"][0]["path"] == "consume"


async def test_tenant_meter_quota(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], limited: str
) -> None:
    made = await client.post(
        "/v1/customers/acme/tenants",
        json={"key": "eu", "quotas": {"meters": {"api_calls": 3}}},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    await send(client, backend, event("t1", data={"count": 3}, tenant="eu"))
    denied = await check(client, backend, "api", tenant="eu")
    assert denied["allowed"] is False and denied["reason"] == "tenant_quota_reached"
    assert (await check(client, backend, "api"))["allowed"] is True  # the contract has room
    refused = (await _consume(client, backend, 1, tenant="eu")).json()
    assert refused["reason"] == "tenant_quota_reached"


async def test_a_consume_answers_with_the_use_after_it(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    """Hand-worked: limit 100 (hard), 40 used; consume 25 → used 65, remaining 35; consume
    40 → refused (65 + 40 > 100), still used 65."""
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    overrides = [{"meter": "api_calls", "limit": 100, "reason": "test"}]
    await create_contract(client, admin, customer="acme", plan="team", overrides=overrides)
    await send(client, backend, event("forty", data={"count": 40}))
    allowed = (await _consume(client, backend, 25)).json()
    assert allowed["allowed"] is True and allowed["consumed"] == 25
    assert allowed["limit"]["used"] == 65 and allowed["limit"]["remaining"] == 35
    refused = (await _consume(client, backend, 40)).json()
    assert refused["allowed"] is False and refused["reason"] == "usage_limit_reached"
    assert refused["limit"]["used"] == 65 and refused["limit"]["remaining"] == 35
    assert "consumed" not in refused
    plain = await check(client, backend, "api")
    assert plain["limit"]["used"] == 65
    assert await _month_total(client, admin, "api_calls") == 65


async def test_the_warning_thresholds_setting_reaches_every_check(
    stores: Any, client: httpx.AsyncClient, backend: dict[str, str], limited: str
) -> None:
    """ALLOTMENT_USAGE_WARNING_THRESHOLDS is handed to each app's checker, not set on a
    module: an app built with (0.5,) warns at 5 of 10 while one with the default (0.8, 1)
    beside it, on the same data, does not."""
    from allotment.app import create_app

    await send(client, backend, event("a", data={"count": 5}))
    application = create_app(stores.settings(usage_warning_thresholds=(0.5,)))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            warned = await check(http, backend, "api")
            assert warned["warnings"] == ["approaching_limit"]
            assert warned["limit"]["threshold"] == 0.5
    default = await check(client, backend, "api")
    assert default["warnings"] == [] and default["limit"]["used"] == 5
