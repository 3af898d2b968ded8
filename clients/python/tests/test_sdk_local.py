"""`local=True`: checks decided in process from verified artifacts, the rest by the service;
artifacts refreshed on stream events; never used past `grace_until` nor on another machine."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from allotment_client import (
    Allotment,
    ArtifactInvalid,
    AsyncAllotment,
    Forbidden,
    KeySet,
    _calls,
    decide,
    verify,
)
from allotment_client.artifacts import SKEW_S
from allotment_client.local import ArtifactCache
from conftest import GRACE_S, Service


async def test_local_checks_answer_what_the_artifact_decides_and_ask_the_service_for_the_rest(
    service: Service,
) -> None:
    team, _ = await service.customer(plan="team")
    big, _ = await service.customer(plan="enterprise")

    def scenario() -> None:
        with Allotment(service.url, service.key, local=True, stream=False, spool=False) as sdk:
            local = {
                (team, "reports"): (True, "ok"),
                (team, "sso"): (False, "feature_not_in_plan"),
                (team, "teleport"): (False, "feature_unknown"),
                (team, "editor"): (False, "seat_required"),  # no subject named
                (team, "agent"): (False, "feature_not_in_plan"),
                (team, "exports"): (True, "ok"),  # a soft limit; its rule reads the contract
                (big, "sso"): (True, "ok"),  # its rule reads the contract only
                (big, "api"): (True, "ok"),  # a soft limit on enterprise
                (big, "agent"): (False, "instance_required"),  # no instance named
            }
            for (customer, feature), expected in local.items():
                answer = sdk.check(customer, feature)
                assert (answer.allowed, answer.reason) == expected, (customer, feature)
                assert answer.local and answer.decision_id is None, (customer, feature)
            # A denial before the rules holds whatever else the check names.
            assert sdk.check(team, "sso", subject="ann", tenant="t1").local

            remote = [
                sdk.check(team, "api"),  # a hard limit: the live counter decides
                sdk.check(team, "editor", subject="ann"),  # the subject's seat
                sdk.check(big, "agent", instance="host-1"),  # a lease the artifact lacks
                sdk.check(team, "reports", tenant="t1"),  # tenants
                sdk.consume(team, "api", 2),
            ]
            assert all(not d.local and d.decision_id for d in remote)
            assert [d.reason for d in remote] == [
                "ok",
                "seat_required",
                "instance_unknown",
                "tenant_unknown",
                "ok",
            ]
            sdk.assign_seat(team, "ann")
            assert sdk.check(team, "editor", subject="ann").allowed

    await asyncio.to_thread(scenario)


async def test_a_revoking_amendment_reaches_a_local_client(service: Service) -> None:
    customer, contract = await service.customer(plan="team")
    sdk = Allotment(service.url, service.key, local=True, spool=False)
    try:
        assert sdk.refresher is not None
        await asyncio.to_thread(sdk.refresher.connected.wait, 10)
        first = await asyncio.to_thread(sdk.check, customer, "reports")
        assert first.allowed and first.local
        revoke = {"feature": "reports", "action": "revoke", "reason": "test"}
        await service.amend(contract, overrides=[revoke])
        started = time.monotonic()
        while (await asyncio.to_thread(sdk.check, customer, "reports")).allowed:
            assert time.monotonic() - started < 10, "the revocation never reached the SDK"
            await asyncio.sleep(0.01)
        denied = await asyncio.to_thread(sdk.check, customer, "reports")
        assert (denied.reason, denied.local) == ("feature_not_in_plan", True)
    finally:
        await asyncio.to_thread(sdk.close)


async def test_the_async_client_decides_locally_and_follows_the_stream(service: Service) -> None:
    customer, contract = await service.customer(plan="team")
    async with AsyncAllotment(service.url, service.key, local=True, spool=False) as sdk:
        assert sdk.refresher is not None
        await asyncio.wait_for(sdk.refresher.connected.wait(), 10)
        assert (await sdk.check(customer, "reports")).local
        await service.amend(contract, addons=["audit_pack"])
        started = time.monotonic()
        while not (await sdk.check(customer, "audit_log")).allowed:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.01)
        assert (await sdk.check(customer, "audit_log")).local


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_an_artifact_is_never_used_past_grace_until_nor_on_another_machine(
    service: Service,
) -> None:
    customer, _ = await service.customer(plan="enterprise")
    async with AsyncAllotment(service.url, service.key, spool=False) as sdk:
        await sdk.register_instance(customer, "host-1", kind="vm")
        token = await sdk._send(_calls.artifact(customer, fingerprint="host-1"))
        keys = KeySet.from_jwks(await sdk._send(_calls.jwks()))
    artifact = verify(token, keys, fingerprint="host-1", rules={})
    assert artifact.grace_until == artifact.expires_at + GRACE_S
    on_host = {"machine": "host-1"}

    in_grace = artifact.expires_at + SKEW_S + 60
    answer = decide(artifact, "reports", now=in_grace, **on_host)
    assert answer is not None and answer.allowed and "grace_period" in answer.warnings
    assert verify(token, keys, now=in_grace, fingerprint="host-1").in_grace(in_grace)

    past = artifact.grace_until + SKEW_S + 1
    assert decide(artifact, "reports", now=past, **on_host) is None
    assert decide(artifact, "teleport", now=past, **on_host) is None
    with pytest.raises(ArtifactInvalid) as expired:
        verify(token, keys, now=past)
    assert expired.value.reason == "expired"
    cache = ArtifactCache(fingerprint="host-1")
    cache.put(customer, artifact)
    assert cache.get(customer, now=time.time()) is artifact
    assert cache.get(customer, now=past) is None

    # Bound to host-1: nowhere else, and its instance feature only for host-1.
    with pytest.raises(ArtifactInvalid) as elsewhere:
        verify(token, keys, fingerprint="host-2")
    assert elsewhere.value.reason == "wrong_machine"
    assert decide(artifact, "reports", machine="host-2") is None
    assert decide(artifact, "reports") is None
    assert ArtifactCache(fingerprint="host-2").get(customer) is None
    agent = decide(artifact, "agent", instance="host-1", **on_host)
    assert agent is not None and agent.allowed and agent.local
    assert decide(artifact, "agent", instance="host-3", **on_host) is None

    # A changed byte, another algorithm, an unknown key: refused.
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["features"] = [{"feature": "everything", "allowed": True, "reason": "ok"}]
    forged = f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"
    none_head = _b64(json.dumps({"alg": "none", "typ": "allotment-entitlements+jwt"}).encode())
    for bad, reason in [
        (forged, "bad_signature"),
        (f"{none_head}.{body}.", "algorithm"),
        ("not-a-token", "malformed"),
    ]:
        with pytest.raises(ArtifactInvalid) as refused:
            verify(bad, keys)
        assert refused.value.reason == reason
    with pytest.raises(ArtifactInvalid) as unknown:
        verify(token, KeySet({}))
    assert unknown.value.reason == "unknown_kid"
    future = artifact.issued_at - SKEW_S - 1
    with pytest.raises(ArtifactInvalid) as behind:
        verify(token, keys, now=future)
    assert behind.value.reason == "clock_behind"


async def test_a_machine_bound_client_decides_its_instance_feature_locally(
    service: Service,
) -> None:
    customer, _ = await service.customer(plan="enterprise")

    def scenario() -> None:
        with (
            Allotment(
                service.url,
                service.key,
                local=True,
                fingerprint="node-7",
                stream=False,
                spool=False,
            ) as sdk,
            sdk.hold_instance(customer, "node-7", kind="vm"),
        ):
            here = sdk.check(customer, "agent", instance="node-7")
            assert here.allowed and here.local
            artifact = sdk.artifact(customer)
            assert artifact is not None and artifact.fingerprint == "node-7"
            there = sdk.check(customer, "agent", instance="node-8")
            assert not there.local and there.reason == "instance_unknown"

    await asyncio.to_thread(scenario)


async def test_a_customer_scoped_key_follows_its_own_customers_stream(service: Service) -> None:
    from tests.factories.auth import create_key

    customer, contract = await service.customer(plan="team")
    own = (await create_key(service.app, scopes=[f"customer:{customer}"]))["Authorization"][7:]
    async with AsyncAllotment(service.url, own, local=True, spool=False) as sdk:
        assert (await sdk.check(customer, "reports")).local  # its artifact, fetched
        assert sdk.refresher is not None
        await asyncio.wait_for(sdk.refresher.connected.wait(), 10)  # ?customer= after a 403
        # Its key cannot read the policy, so any input may matter to a rule: the service
        # decides, and it does not take checks from a customer's own key.
        with pytest.raises(Forbidden):
            await sdk.check(customer, "reports", subject="ann")
        revoke = {"feature": "reports", "action": "revoke", "reason": "test"}
        await service.amend(contract, overrides=[revoke])
        started = time.monotonic()
        while (await sdk.check(customer, "reports")).allowed:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.01)


async def test_a_lease_this_client_released_is_not_allowed_locally_after(
    service: Service,
) -> None:
    customer, _ = await service.customer(plan="enterprise")

    def scenario() -> None:
        with Allotment(
            service.url, service.key, local=True, fingerprint="host-x", stream=False, spool=False
        ) as sdk:
            with sdk.hold_instance(customer, "host-x", kind="vm"):
                here = sdk.check(customer, "agent", instance="host-x")
                assert here.allowed and here.local
            after = sdk.check(customer, "agent", instance="host-x")  # deregistered just now
            assert not after.allowed and not after.local, after

    await asyncio.to_thread(scenario)

    async with AsyncAllotment(
        service.url, service.key, local=True, fingerprint="host-y", stream=False, spool=False
    ) as sdk:
        lease = await sdk.hold_instance(customer, "host-y", kind="vm")
        here = await sdk.check(customer, "agent", instance="host-y")
        assert here.allowed and here.local
        await lease.release()
        after = await sdk.check(customer, "agent", instance="host-y")
        assert not after.allowed and not after.local, after
