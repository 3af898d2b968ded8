"""Rules through /v1/check: the snapshot load brings instances' metadata, the checker reads
meter use for a rule on `usage`, and a payload cached by an older release still reads."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from allotment.check import holdings
from allotment.check.payload import build
from tests.check.snapshots import NOW
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import assign, check, register
from tests.factories.usage import event, metered_document, send


def _document() -> dict[str, Any]:
    document = metered_document()
    document["features"]["owned"] = {"description": "the instance's own user only"}
    document["features"]["capped"] = {"description": "until 3 API calls"}
    document["features"]["roomy"] = {"description": "while a seat is free"}
    document["features"]["quota"] = {"description": "tenants with a seat quota"}
    document["plans"]["team"]["features"] += ["owned", "capped", "roomy", "quota"]
    document["rules"] = [
        {
            "feature": "owned",
            "when": "instance != null && instance.metadata.user == subject.id",
            "reason": "not_the_owner",
        },
        {"feature": "capped", "when": "usage.api_calls < 3", "reason": "too_many_calls"},
        {"feature": "roomy", "when": "seats.used < seats.limit", "reason": "seats_full"},
        {
            "feature": "quota",
            "when": "tenant != null && tenant.quotas.seats >= 2",
            "reason": "no_seat_quota",
        },
    ]
    return document


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    await publish_policy(client, admin, _document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    return "acme"


async def test_instance_metadata_user_against_subject(
    client: httpx.AsyncClient, backend: dict[str, str], acme: str
) -> None:
    created = await register(client, backend, "fp-1", metadata={"user": "alice"})
    assert created.status_code == 201, created.text
    mine = await check(client, backend, "owned", subject="alice", instance="fp-1")
    assert mine["allowed"] is True, mine
    theirs = await check(client, backend, "owned", subject="bob", instance="fp-1")
    assert (theirs["allowed"], theirs["reason"], theirs["rule_reason"]) == (
        False,
        "rule_denied",
        "not_the_owner",
    )
    stranger = await check(client, backend, "owned", subject="alice", instance="fp-9")
    assert (stranger["allowed"], stranger["reason"]) == (False, "instance_unknown")


async def test_new_metadata_on_a_live_instance_is_seen_at_once(
    client: httpx.AsyncClient, backend: dict[str, str], acme: str
) -> None:
    await register(client, backend, "fp-1", metadata={"user": "alice"})
    assert (await check(client, backend, "owned", subject="alice", instance="fp-1"))["allowed"]
    renewed = await register(client, backend, "fp-1", metadata={"user": "bob"})
    assert renewed.status_code == 200, renewed.text
    assert (await check(client, backend, "owned", subject="bob", instance="fp-1"))["allowed"]
    again = await check(client, backend, "owned", subject="alice", instance="fp-1")
    assert again["reason"] == "rule_denied"


async def test_a_rule_on_usage_sees_the_meter(
    client: httpx.AsyncClient, backend: dict[str, str], acme: str
) -> None:
    assert (await check(client, backend, "capped"))["allowed"] is True
    await send(client, backend, event("a", data={"count": 3}))
    denied = await check(client, backend, "capped")  # the ingesting worker sees it at once
    assert (denied["allowed"], denied["reason"], denied["rule_reason"]) == (
        False,
        "rule_denied",
        "too_many_calls",
    )
    batch = await client.post(
        "/v1/check/batch",
        json={"customer": "acme", "features": ["reports", "capped"]},
        headers=backend,
    )
    assert batch.status_code == 200, batch.text
    reasons = [d["reason"] for d in batch.json()["decisions"]]
    assert reasons == ["ok", "rule_denied"]


async def test_a_rule_on_seats_and_tenant_quotas(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], acme: str
) -> None:
    assert (await check(client, backend, "roomy"))["allowed"] is True  # 0 of 10
    for n in range(10):
        assert (await assign(client, backend, f"u{n}")).status_code == 201
    full = await check(client, backend, "roomy")
    assert (full["reason"], full["rule_reason"]) == ("rule_denied", "seats_full")
    tenant = await client.post(
        "/v1/customers/acme/tenants", json={"key": "eu", "quotas": {"seats": 2}}, headers=admin
    )
    assert tenant.status_code == 201, tenant.text
    assert (await check(client, backend, "quota", tenant="eu"))["allowed"] is True
    unknown = await check(client, backend, "quota", tenant="mars")
    assert unknown["reason"] == "tenant_unknown"


def test_a_payload_cached_before_instance_fields_still_reads() -> None:
    old = {
        "customer": "acme",
        "known": True,
        "state_version": 1,
        "contract": None,
        "holdings": {
            "seats": [],
            "sessions": [],
            "instances": [["fp-1", 1, None, "2026-06-15T12:10:00+00:00", False]],
            "tenants": {},
            "as_of": "2026-06-15T12:00:00+00:00",
        },
    }
    snapshot = build(old, None, None)
    hold = snapshot.holdings.instances["fp-1"]
    assert (hold.weight, hold.kind, hold.environment, hold.metadata) == (1, None, None, None)
    assert hold.lease_expires_at > NOW and snapshot.customer_name is None
    new = holdings.from_payload(
        {**old["holdings"], "instances": [[*old["holdings"]["instances"][0], "vm", "", {"a": 1}]]}  # type: ignore[index]
    )
    assert new.instances["fp-1"].metadata == {"a": 1}
