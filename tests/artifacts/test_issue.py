"""GET /v1/customers/{key}/artifact: what an artifact holds, that any client can verify it
against the served key set with `cryptography` alone, that every tampering fails, and the
route's refusals (TTL bounds, a fingerprint without a live lease, another customer's key,
an unknown customer), its audit record and lifecycle event."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from allotment.artifacts import service as artifacts
from allotment.artifacts.verify import Invalid, verify
from allotment.db import session_scope
from allotment.kit.clock import utcnow
from tests.artifacts.helpers import (
    Refused,
    artifact,
    b64e,
    fetch,
    independent_verify,
    jwks,
    parts,
)
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.seats import register
from tests.factories.usage import event, send


async def test_an_artifact_verifies_against_the_served_key_set_with_cryptography_alone(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    token = await artifact(client, backend)
    keys = await jwks(client)
    claims = independent_verify(token, keys)
    header, _, signature = parts(token)
    assert header == {"alg": "EdDSA", "kid": header["kid"], "typ": "allotment-entitlements+jwt"}
    assert len(signature) == 64
    active = [k for k in keys["keys"] if k["kid"] == header["kid"]]
    assert active and active[0]["kty"] == "OKP" and active[0]["crv"] == "Ed25519"
    assert active[0]["alg"] == "EdDSA" and active[0]["use"] == "sig" and "d" not in active[0]
    assert len(keys["keys"]) == 2  # the active key and the next one

    assert claims["iss"] == "allotment" and claims["sub"] == "acme"
    assert claims["nbf"] == claims["iat"] and claims["exp"] - claims["iat"] == 24 * 3600
    assert claims["grace_until"] == claims["exp"]  # no grace configured
    assert claims["jti"].startswith("art_")
    assert claims["policy_version"] == 1 and claims["contract_revision"] == 1
    assert isinstance(claims["state_version"], int)
    assert claims["contract"]["plan"] == "team" and claims["contract"]["revision"] == 1
    assert "starts_at" in claims["contract"] and "renews_at" in claims["contract"]
    features = {f["feature"]: f for f in claims["features"]}
    assert features["editor"]["allowed"] and features["editor"]["seat_required"] is True
    assert features["api"]["meter"] == "api_calls"
    assert features["sso"]["allowed"] is False and features["sso"]["requires"] == ["audit_log"]
    assert features["sso"]["reason"] == "feature_not_in_plan"
    assert features["agent"]["instance_required"] is True
    assert claims["limits"]["seats"]["limit"] == 10
    assert claims["limits"]["instances"]["limit"] == 3
    api_calls = claims["limits"]["meters"]["api_calls"]
    assert api_calls["limit"] == 100_000 and api_calls["used"] == 0
    assert api_calls["remaining"] == 100_000
    assert "instance" not in claims

    # The same decisions the entitlements route gives: built on it, not decided again.
    listed = (await client.get("/v1/customers/acme/entitlements", headers=backend)).json()
    assert listed["features"] == claims["features"]
    # And the project's own verifier agrees.
    assert verify(token, keys).customer == "acme"


async def test_meter_use_at_issue_time_is_in_the_artifact(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    sent = await send(client, admin, [event(f"e{i}", data={"count": 5}) for i in range(3)])
    assert sent.status_code == 200, sent.text
    claims = independent_verify(await artifact(client, backend), await jwks(client))
    api_calls = claims["limits"]["meters"]["api_calls"]
    assert api_calls["used"] == 15 and api_calls["remaining"] == 100_000 - 15


def _encode(value: dict[str, Any]) -> str:
    return b64e(json.dumps(value).encode())


def _tampered(token: str, other_kid: str) -> dict[str, str]:
    """One forgery of each kind; none may verify."""
    head, body, sig = token.split(".")
    header, claims, signature = parts(token)
    flipped = bytearray(signature)
    flipped[10] ^= 0x01
    changed = body[:20] + ("A" if body[20] != "A" else "B") + body[21:]
    forged_body = _encode({**claims, "sub": "globex"})
    stranger = Ed25519PrivateKey.generate()  # published nowhere, signing under the same kid
    forged_signature = b64e(stranger.sign(f"{head}.{forged_body}".encode()))
    return {
        "payload byte": f"{head}.{changed}.{sig}",
        "payload claim": f"{head}.{_encode({**claims, 'exp': claims['exp'] + 86400})}.{sig}",
        "header kid": f"{_encode({**header, 'kid': other_kid})}.{body}.{sig}",
        "signature": f"{head}.{body}.{b64e(bytes(flipped))}",
        "alg none": f"{_encode({**header, 'alg': 'none'})}.{body}.",
        "another key, same kid": f"{head}.{forged_body}.{forged_signature}",
    }


async def test_every_tampering_fails(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    token = await artifact(client, backend)
    keys = await jwks(client)
    kid = parts(token)[0]["kid"]
    other = next(k["kid"] for k in keys["keys"] if k["kid"] != kid)  # the next key: published
    cases = _tampered(token, other)
    for name, forged in cases.items():
        assert forged != token, name
        with pytest.raises((InvalidSignature, Refused)):
            independent_verify(forged, keys)
        with pytest.raises(Invalid) as refused:
            verify(forged, keys)
        expected = {"alg none": "algorithm"}.get(name, "bad_signature")
        assert refused.value.reason == expected, (name, refused.value.message)
    independent_verify(token, keys)  # the original still verifies


async def test_a_machine_bound_artifact_names_its_instance_and_fails_on_another(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    registered = await register(client, backend, "host-1", environment="prod")
    assert registered.status_code == 201, registered.text
    token = await artifact(client, backend, fingerprint="host-1")
    keys = await jwks(client)
    instance = independent_verify(token, keys)["instance"]
    assert instance["fingerprint"] == "host-1" and instance["kind"] == "vm"
    assert instance["id"] == registered.json()["id"] and instance["environment"] == "prod"
    assert instance["lease_expires_at"] == registered.json()["lease_expires_at"]
    assert verify(token, keys, fingerprint="host-1").claims["instance"] == instance
    with pytest.raises(Invalid) as elsewhere:
        verify(token, keys, fingerprint="host-2")
    assert elsewhere.value.reason == "wrong_machine" and "host-1" in elsewhere.value.message
    unbound = await artifact(client, backend)
    with pytest.raises(Invalid) as nowhere:
        verify(unbound, keys, fingerprint="host-1")
    assert nowhere.value.reason == "wrong_machine"


async def test_a_fingerprint_without_a_live_lease_is_409(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    never = await fetch(client, backend, fingerprint="no-such-host")
    assert never.status_code == 409
    assert never.headers["content-type"] == "application/problem+json"
    assert never.json()["type"].endswith("/instance-not-live")
    assert "no-such-host" in never.json()["detail"]
    registered = await register(client, backend, "host-1")
    gone = await client.delete(f"/v1/instances/{registered.json()['id']}", headers=backend)
    assert gone.status_code == 204
    ended = await fetch(client, backend, fingerprint="host-1")
    assert ended.status_code == 409 and ended.json()["type"].endswith("/instance-not-live")


@pytest.mark.parametrize(
    "ttl",
    ["3599", "2592001", "0", "-5", "1h", "PT1H", "86400.0", "+3600", " 3600", "3_600", "03600"],
)
async def test_a_ttl_out_of_bounds_is_a_422_naming_ttl(
    client: httpx.AsyncClient, backend: dict[str, str], team: str, ttl: str
) -> None:
    response = await fetch(client, backend, ttl=ttl)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["path"] for e in response.json()["errors"]] == ["query.ttl"]


@pytest.mark.parametrize("ttl", [3600, 2_592_000])
async def test_the_ttl_bounds_themselves_are_accepted(
    client: httpx.AsyncClient, backend: dict[str, str], team: str, ttl: int
) -> None:
    claims = independent_verify(await artifact(client, backend, ttl=ttl), await jwks(client))
    assert claims["exp"] - claims["iat"] == ttl


async def test_scopes_a_customer_key_gets_its_own_artifact_only(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="globex", plan="starter")
    own = await create_key(app, scopes=["customer:acme"])
    token = await artifact(client, own)
    assert independent_verify(token, await jwks(client))["sub"] == "acme"
    theirs = await fetch(client, own, "globex")
    assert theirs.status_code == 403
    assert theirs.headers["content-type"] == "application/problem+json"
    finance = await create_key(app, scopes=["finance"])
    assert (await fetch(client, finance)).status_code == 403
    assert (await client.get("/v1/customers/acme/artifact")).status_code == 401
    unknown = await fetch(client, admin, "nobody")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def test_issuing_is_audited_emits_its_event_and_raises_the_keys_signed_until(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    registered = await register(client, backend, "host-1")
    assert registered.status_code == 201
    token = await artifact(client, backend, fingerprint="host-1", ttl=7200)
    header, claims, _ = parts(token)
    async with session_scope(app.state.sessionmaker) as session:
        audited = (
            await session.execute(
                text("SELECT actor, target_key, after FROM audit_log WHERE action = :a"),
                {"a": "artifact.issued"},
            )
        ).one()
        emitted = (
            await session.execute(
                text("SELECT data FROM usage_events WHERE type = 'allotment.artifact.issued'")
            )
        ).one()
        signed_until = (
            await session.execute(
                text("SELECT signed_until FROM signing_keys WHERE kid = :k"), {"k": header["kid"]}
            )
        ).scalar_one()
    assert audited.actor.startswith("api_key:")
    assert audited.target_key == f"acme/{claims['jti']}"
    after = audited.after
    assert after["customer"] == "acme" and after["kid"] == header["kid"]
    assert after["jti"] == claims["jti"] and after["fingerprint"] == "host-1"
    assert after["exp"].startswith(iso(_at(claims["exp"]))[:19])
    assert emitted.data == after
    assert int(signed_until.timestamp()) == claims["grace_until"]
    verified = await client.get("/v1/audit/verify", headers=admin)
    assert verified.json()["ok"] is True


def _at(seconds: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)


async def test_an_artifact_never_outlives_its_contract_nor_has_grace_past_it(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="trialco")
    ends = utcnow() + timedelta(hours=2)
    await create_contract(
        client, admin, customer="trialco", plan="team", kind="trial", ends_at=iso(ends)
    )
    claims = independent_verify(
        await artifact(client, backend, "trialco", ttl=86400), await jwks(client)
    )
    assert claims["exp"] == int(ends.timestamp()) and claims["grace_until"] == claims["exp"]
    # With grace (ALLOTMENT_ARTIFACT_GRACE_S), an artifact inside the term gets it...
    async with session_scope(app.state.sessionmaker) as session:
        short = await artifacts.issue(
            session,
            checker=app.state.checker,
            keyring=app.state.keyring,
            customer="trialco",
            ttl=timedelta(hours=1),
            fingerprint=None,
            actor="test",
            issuer="allotment",
            grace=timedelta(hours=6),
        )
    # (up to the term's end: 6 h of grace after a 1 h artifact would run 5 h past it)
    assert short.claims["exp"] < int(ends.timestamp())
    assert short.claims["grace_until"] == int(ends.timestamp())
    # ...and one capped by the term's end gets none past it.
    async with session_scope(app.state.sessionmaker) as session:
        capped = await artifacts.issue(
            session,
            checker=app.state.checker,
            keyring=app.state.keyring,
            customer="trialco",
            ttl=timedelta(hours=5),
            fingerprint=None,
            actor="test",
            issuer="allotment",
            grace=timedelta(hours=6),
        )
    assert capped.claims["exp"] == capped.claims["grace_until"] == int(ends.timestamp())


async def test_the_plans_grace_sets_grace_until_and_plans_that_extend_it_inherit_it(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    document = demo_document()
    document["plans"]["team"]["grace"] = "72h"
    document["plans"]["floating"]["grace"] = "1d"  # its own wins over team's
    await publish_policy(client, admin, document)
    for key, plan in (("teamco", "team"), ("bigco", "enterprise"), ("floatco", "floating")):
        await create_customer(client, admin, key=key)
        await create_contract(client, admin, customer=key, plan=plan)
    keys = await jwks(client)
    graces = {}
    for key in ("teamco", "bigco", "floatco"):
        claims = independent_verify(await artifact(client, backend, key, ttl=3600), keys)
        graces[key] = claims["grace_until"] - claims["exp"]
    assert graces == {"teamco": 72 * 3600, "bigco": 72 * 3600, "floatco": 24 * 3600}


async def test_a_plans_grace_over_30_days_is_refused_with_its_path(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from tests.factories.policies_for_contracts import demo_document

    document = demo_document()
    document["plans"]["team"]["grace"] = "31d"
    document["plans"]["starter"]["grace"] = "soon"
    response = await client.post("/v1/policies", json=document, headers=admin)
    assert response.status_code == 422
    errors = {e["path"]: e["message"] for e in response.json()["errors"]}
    assert errors["plans.team.grace"].startswith("grace is at most 30d")
    assert "plans.starter.grace" in errors


async def test_the_grace_never_runs_past_the_contracts_end(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    document = demo_document()
    document["plans"]["team"]["grace"] = "30d"
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="shortco")
    ends = utcnow() + timedelta(days=2)
    await create_contract(
        client, admin, customer="shortco", plan="team", kind="trial", ends_at=iso(ends)
    )
    keys = await jwks(client)
    for ttl in (3600, 86400):  # artifacts inside the term: grace up to the end, no further
        claims = independent_verify(await artifact(client, backend, "shortco", ttl=ttl), keys)
        assert claims["exp"] == claims["iat"] + ttl
        assert claims["grace_until"] == int(ends.timestamp())
