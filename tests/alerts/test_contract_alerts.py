"""Contract and policy events: entitlements.changed from an amendment, a conversion, a
publish, a rollback and an expiring override; the worker's trial, renewal and expiry alerts
with a controlled clock; policy.published."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from allotment.kit.clock import utcnow
from allotment.worker import run_once
from tests.factories.alerts import announced, fired
from tests.factories.contracts import create_contract, days_from_now, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    return "acme"


async def amend(
    client: httpx.AsyncClient, admin: dict[str, str], contract: dict[str, Any], **body: Any
) -> httpx.Response:
    headers = {**admin, "If-Match": f'"{contract["revision"]}"'}
    return await client.patch(f"/v1/contracts/{contract['id']}", json=body, headers=headers)


async def test_an_amendment_announces_what_it_changed_and_a_no_op_nothing(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    contract = await create_contract(client, admin)
    response = await amend(client, admin, contract, addons=["audit_pack"], seats={"limit": 12})
    assert response.status_code == 200, response.text
    (event,) = await announced(app, "entitlements.changed")
    data = event["data"]
    assert event["customer"] == "acme"
    assert data["cause"] == "amendment" and data["contract"] == contract["id"]
    assert data["features_gained"] == ["audit_log"] and data["features_lost"] == []
    assert {"path": "seats.limit", "old": 10, "new": 12} in data["limits_changed"]
    assert "audit_log" in data["after"]["features"]
    assert "audit_log" not in data["before"]["features"]
    # An amendment that changes no entitlement (the discount reason) announces nothing.
    again = await amend(client, admin, response.json(), discount_percent=5, discount_reason="loyal")
    assert again.status_code == 200, again.text
    assert len(await announced(app, "entitlements.changed")) == 1


async def test_a_conversion_announces_the_paid_plan(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    trial = await create_contract(client, admin, kind="trial", ends_at=days_from_now(14))
    url = f"/v1/contracts/{trial['id']}/convert"
    converted = await client.post(url, json={"plan": "enterprise"}, headers=admin)
    assert converted.status_code == 200, converted.text
    (event,) = await announced(app, "entitlements.changed")
    assert event["data"]["cause"] == "conversion"
    assert "sso" in event["data"]["features_gained"]


async def test_publish_announces_the_version_and_each_changed_customer(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    await create_contract(client, admin, plan="team")
    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="globex", plan="starter")
    document = demo_document()
    document["plans"]["team"]["features"].append("audit_log")
    version = await publish_policy(client, admin, document)
    # Only acme (team) gained a feature; globex (starter) is not announced.
    team = await announced(app, "entitlements.changed")
    assert [(e["data"]["customer"], e["data"]["cause"]) for e in team] == [("acme", "publish")]
    assert team[0]["data"]["features_gained"] == ["audit_log"]
    assert team[0]["data"]["policy_version"] == version
    first, publish = await announced(app, "policy.published")
    assert first["data"]["previous_version"] is None
    assert publish["data"]["version"] == version
    assert publish["data"]["previous_version"] == version - 1
    notes = await client.get(f"/v1/policies/{version}/release-notes", headers=admin)
    assert publish["data"]["notes"] == notes.json()  # the notes, as the API answers them
    rolled = await client.post(
        "/v1/policies/rollback", json={"to_version": version - 1}, headers=admin
    )
    assert rolled.status_code == 200, rolled.text
    back = await announced(app, "entitlements.changed")
    assert [(e["data"]["cause"], e["data"]["features_lost"]) for e in back[1:]] == [
        ("rollback", ["audit_log"])
    ]
    assert len(await announced(app, "policy.published")) == 2  # a rollback publishes nothing


async def test_the_worker_warns_of_a_trial_ending_once_per_threshold(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    ends = utcnow() + timedelta(days=20)
    trial = await create_contract(client, admin, kind="trial", ends_at=iso(ends))
    maker = app.state.sessionmaker
    await run_once(maker, now=ends - timedelta(days=8))  # 8 days out: nothing yet
    assert await fired(app, "contract.trial_ending") == []
    await run_once(maker, now=ends - timedelta(days=7))
    await run_once(maker, now=ends - timedelta(days=6))  # the same threshold: once
    await run_once(maker, now=ends - timedelta(hours=20))  # 1 day out
    ending = await fired(app, "contract.trial_ending")
    assert [(e["threshold"], e["data"]["days_left"]) for e in ending] == [("7d", 7), ("1d", 1)]
    assert ending[0]["data"]["contract"] == trial["id"]
    assert await fired(app, "contract.renewal_upcoming") == []
    # Past its end: expired once, and the customer lost what the trial held.
    await run_once(maker, now=ends + timedelta(minutes=1))
    await run_once(maker, now=ends + timedelta(hours=1))
    (expired,) = await fired(app, "contract.expired")
    assert expired["data"]["kind"] == "trial" and expired["data"]["terminated"] is False
    (lost,) = await announced(app, "entitlements.changed")
    assert lost["data"]["cause"] == "contract_expired"
    assert lost["data"]["after"]["features"] == [] and "api" in lost["data"]["before"]["features"]


async def test_a_renewal_is_announced_the_policy_s_days_before_the_term_ends(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    document = demo_document()
    document["alerts"] = {"renewal_upcoming_days": [60]}
    await publish_policy(client, admin, document)
    ends = utcnow() + timedelta(days=90)
    await create_contract(client, admin, ends_at=iso(ends))
    await run_once(app.state.sessionmaker, now=ends - timedelta(days=61))
    assert await fired(app, "contract.renewal_upcoming") == []
    await run_once(app.state.sessionmaker, now=ends - timedelta(days=59))
    (upcoming,) = await fired(app, "contract.renewal_upcoming")
    assert upcoming["data"]["days_before"] == 60


async def test_an_expiring_override_announces_the_feature_lost(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    expires = utcnow() + timedelta(days=3)
    grant = {"feature": "sso", "action": "grant", "reason": "pilot", "expires_at": iso(expires)}
    await create_contract(client, admin, plan="team", overrides=[grant, _audit_grant()])
    await run_once(app.state.sessionmaker, now=expires - timedelta(minutes=1))
    assert await fired(app, "entitlements.changed") == []
    await run_once(app.state.sessionmaker, now=expires + timedelta(minutes=1))
    await run_once(app.state.sessionmaker, now=expires + timedelta(minutes=2))
    (changed,) = await fired(app, "entitlements.changed")
    assert changed["data"]["cause"] == "override_expired"
    assert changed["data"]["features_lost"] == ["sso"]


def _audit_grant() -> dict[str, Any]:
    return {"feature": "audit_log", "action": "grant", "reason": "pilot"}
