"""GET /metrics shows the decision path: latency, decisions by reason, cache levels, lag.

Metrics are process-global and other tests run in the same process, so every assertion
compares a value read from /metrics before the actions with one read after them.
"""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy

Key = tuple[str, frozenset[tuple[str, str]]]


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


CHECK_COUNT = key("allotment_check_seconds_count", endpoint="check")
BATCH_COUNT = key("allotment_check_seconds_count", endpoint="batch")
NOT_IN_PLAN = key("allotment_decisions_total", allowed="false", reason="feature_not_in_plan")
ALLOWED_OK = key("allotment_decisions_total", allowed="true", reason="ok")
L1_HIT = key("allotment_snapshot_cache_total", level="l1", result="hit")
L1_MISS = key("allotment_snapshot_cache_total", level="l1", result="miss")
LAG_COUNT = key("allotment_invalidation_lag_seconds_count")


async def _metrics(client: httpx.AsyncClient) -> dict[Key, float]:
    """Every sample /metrics exposes, by (name, labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        key(sample.name, **sample.labels): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _delta(before: dict[Key, float], after: dict[Key, float], sample: Key) -> float:
    """How much `sample` grew; a sample not exposed yet (no observation) counts as 0."""
    return after.get(sample, 0.0) - before.get(sample, 0.0)


async def _check(client: httpx.AsyncClient, admin: dict[str, str], feature: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/check", json={"customer": "acme", "feature": feature}, headers=admin
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_checks_show_in_latency_decision_and_cache_metrics(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    before = await _metrics(client)

    # The first check misses L1 (the contract write dropped the entry); the rest hit it.
    assert (await _check(client, admin, "reports"))["allowed"] is True
    assert (await _check(client, admin, "sso"))["reason"] == "feature_not_in_plan"
    assert (await _check(client, admin, "scim"))["reason"] == "feature_not_in_plan"
    batch = await client.post(
        "/v1/check/batch",
        json={"customer": "acme", "features": ["reports", "sso"]},
        headers=admin,
    )
    assert batch.status_code == 200

    after = await _metrics(client)
    assert _delta(before, after, CHECK_COUNT) >= 3
    assert _delta(before, after, BATCH_COUNT) >= 1
    assert _delta(before, after, NOT_IN_PLAN) >= 3  # two checks and one batch decision
    assert _delta(before, after, ALLOWED_OK) >= 2
    assert _delta(before, after, L1_MISS) >= 1
    assert _delta(before, after, L1_HIT) >= 3
    # The histogram is a histogram: buckets up to +Inf, and a sum.
    assert key("allotment_check_seconds_bucket", endpoint="check", le="+Inf") in after
    assert key("allotment_check_seconds_sum", endpoint="check") in after


async def test_an_amendment_is_measured_as_invalidation_lag(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, customer="acme", plan="team")
    await _check(client, admin, "reports")  # cache the snapshot the amendment must drop
    before = await _metrics(client)

    amended = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"plan": "enterprise"},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert amended.status_code == 200, amended.text

    after = await _metrics(client)
    assert _delta(before, after, LAG_COUNT) >= 1
    assert (await _check(client, admin, "sso"))["allowed"] is True
