"""/v1/check end to end: real PostgreSQL and Redis, snapshots, invalidation on write."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, days_from_now
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy


async def _setup(client: httpx.AsyncClient, admin: dict[str, str], **contract: Any) -> None:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team", **contract)


async def _check(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/check", json={"customer": "acme", **body}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_check_allows_plan_feature_with_full_document(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _setup(client, admin)
    checker = await create_key(app, scopes=["check"])
    decision = await _check(client, checker, feature="reports")
    assert decision["allowed"] is True and decision["reason"] == "ok"
    assert decision["policy_version"] == 1 and decision["contract_revision"] == 1
    assert decision["decision_id"].startswith("dec_") and decision["stale"] is False
    assert decision["cache_ttl_s"] > 0 and decision["warnings"] == []


async def test_unknown_customer_and_feature_are_denied(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _setup(client, admin)
    ghost = await client.post(
        "/v1/check", json={"customer": "ghost", "feature": "reports"}, headers=admin
    )
    assert ghost.json()["allowed"] is False and ghost.json()["reason"] == "customer_unknown"
    unknown = await _check(client, admin, feature="teleport")
    assert unknown["allowed"] is False and unknown["reason"] == "feature_unknown"


async def test_new_customer_is_seen_at_once_after_a_cached_unknown(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, demo_document())
    first = await client.post(
        "/v1/check", json={"customer": "late", "feature": "reports"}, headers=admin
    )
    assert first.json()["reason"] == "customer_unknown"
    await create_customer(client, admin, key="late")
    second = await client.post(
        "/v1/check", json={"customer": "late", "feature": "reports"}, headers=admin
    )
    assert second.json()["reason"] == "no_active_contract"


async def test_read_your_writes_after_an_amendment(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _setup(client, admin)
    contract = (await client.get("/v1/customers/acme/contracts", headers=admin)).json()["items"][0]
    before = await _check(client, admin, feature="sso")
    assert before["reason"] == "feature_not_in_plan"
    amended = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"plan": "enterprise"},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert amended.status_code == 200, amended.text
    after = await _check(client, admin, feature="sso")
    assert after["allowed"] is True and after["contract_revision"] == 2


async def test_override_revoke_is_seen_at_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _setup(client, admin)
    contract = (await client.get("/v1/customers/acme/contracts", headers=admin)).json()["items"][0]
    assert (await _check(client, admin, feature="reports"))["allowed"] is True
    await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"overrides": [{"feature": "reports", "action": "revoke", "reason": "abuse"}]},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert (await _check(client, admin, feature="reports"))["reason"] == "feature_not_in_plan"


async def test_publish_and_rollback_are_seen_at_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _setup(client, admin)
    assert (await _check(client, admin, feature="sso"))["reason"] == "feature_not_in_plan"
    document = demo_document()
    document["plans"]["team"]["features"].append("sso")
    document["plans"]["team"]["features"].append("audit_log")
    version = await publish_policy(client, admin, document)
    granted = await _check(client, admin, feature="sso")
    assert granted["allowed"] is True and granted["policy_version"] == version
    rolled = await client.post("/v1/policies/rollback", json={"to_version": 1}, headers=admin)
    assert rolled.status_code == 200, rolled.text
    back = await _check(client, admin, feature="sso")
    assert back["reason"] == "feature_not_in_plan" and back["policy_version"] == 1


async def test_contract_not_started_and_trial_expired(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", starts_at=days_from_now(3))
    assert (await _check(client, admin, feature="reports"))["reason"] == "contract_not_started"
    await create_customer(client, admin, key="trialco")
    await create_contract(
        client,
        admin,
        customer="trialco",
        kind="trial",
        starts_at=days_from_now(-20),
        ends_at=days_from_now(-5),
    )
    expired = await client.post(
        "/v1/check", json={"customer": "trialco", "feature": "reports"}, headers=admin
    )
    assert expired.json()["reason"] == "trial_expired"


async def test_dependency_and_rule_reasons(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(
        client,
        admin,
        customer="acme",
        plan="team",
        overrides=[{"feature": "sso", "action": "grant", "reason": "pilot"}],
    )
    missing = await _check(client, admin, feature="sso")
    assert missing["reason"] == "dependency_missing" and missing["missing"] == ["audit_log"]
    await create_customer(client, admin, key="cnco")
    await create_contract(
        client, admin, customer="cnco", plan="enterprise", attributes={"region": "cn"}
    )
    denied = await client.post(
        "/v1/check", json={"customer": "cnco", "feature": "sso"}, headers=admin
    )
    assert denied.json()["reason"] == "rule_denied"
    assert denied.json()["rule_reason"] == "region_not_supported"


async def test_batch_decides_each_feature_from_one_snapshot(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _setup(client, admin)
    response = await client.post(
        "/v1/check/batch",
        json={"customer": "acme", "features": ["reports", "sso", "nope"]},
        headers=admin,
    )
    assert response.status_code == 200
    reasons = [(d["feature"], d["reason"]) for d in response.json()["decisions"]]
    assert reasons == [
        ("reports", "ok"),
        ("sso", "feature_not_in_plan"),
        ("nope", "feature_unknown"),
    ]
    too_many = await client.post(
        "/v1/check/batch", json={"customer": "acme", "features": ["a"] * 101}, headers=admin
    )
    assert too_many.status_code == 422


async def test_entitlements_lists_every_feature(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _setup(client, admin)
    own = await create_key(app, scopes=["customer:acme"])
    response = await client.get("/v1/customers/acme/entitlements", headers=own)
    assert response.status_code == 200
    body = response.json()
    features = {f["feature"]: f for f in body["features"]}
    assert features["reports"]["allowed"] is True
    assert features["sso"]["reason"] == "feature_not_in_plan"
    assert body["contract"]["plan"] == "team" and body["limits"]["seats"]["limit"] == 10
    other = await client.get("/v1/customers/globex/entitlements", headers=own)
    assert other.status_code == 403


async def test_denials_are_logged_and_listed(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _setup(client, admin)
    await _check(client, admin, feature="sso")
    await app.state.checker.decisions.flush()
    listed = await client.get(
        "/v1/decisions", params={"customer": "acme", "allowed": "false"}, headers=admin
    )
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [(i["feature"], i["reason"]) for i in items] == [("sso", "feature_not_in_plan")]


async def test_a_feature_named_twice_in_a_batch_gets_two_decisions_and_two_records(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _setup(client, admin)
    response = await client.post(
        "/v1/check/batch",
        json={"customer": "acme", "features": ["sso", "reports", "sso", "reports", "sso"]},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    decisions = response.json()["decisions"]
    ids = [d.pop("decision_id") for d in decisions]
    assert len(set(ids)) == 5 and ids == sorted(ids)
    assert decisions[0] == decisions[2] == decisions[4] and decisions[1] == decisions[3]
    assert decisions[0]["reason"] == "feature_not_in_plan" and decisions[1]["allowed"] is True
    await app.state.checker.decisions.flush()
    listed = await client.get(
        "/v1/decisions", params={"customer": "acme", "allowed": "false"}, headers=admin
    )
    logged = {i["decision_id"] for i in listed.json()["items"]}
    assert logged == {ids[0], ids[2], ids[4]}


async def test_bad_check_bodies_are_problems(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    malformed = await client.post(
        "/v1/check",
        content=b'{"customer": "acme",',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == "application/problem+json"
    invalid = await client.post(
        "/v1/check", json={"customer": "Not A Key", "colour": "red"}, headers=admin
    )
    assert invalid.status_code == 422
    paths = sorted(e["path"] for e in invalid.json()["errors"])
    assert paths == ["colour", "customer", "feature"]
    batch = await client.post("/v1/check/batch", json={"customer": "acme"}, headers=admin)
    assert batch.status_code == 422 and batch.json()["errors"][0]["path"] == "features"


async def test_openapi_documents_the_check_bodies(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    body = spec["paths"]["/v1/check"]["post"]["requestBody"]["content"]["application/json"]
    name = body["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = spec["components"]["schemas"][name]
    assert set(schema["properties"]) >= {"customer", "feature", "subject", "consume"}
