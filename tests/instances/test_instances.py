"""Instances through the API and the service: leases, kind weights, expiry, reaping."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from allotment.instances import service as instances
from allotment.instances.schemas import InstanceRegister
from allotment.kit.clock import utcnow
from allotment.worker import run_once
from tests.factories.contracts import iso
from tests.factories.seats import check, register


async def _register_at(app: Any, fingerprint: str, kind: str, at: Any) -> Any:
    async with session_scope(app.state.sessionmaker) as session:
        return await instances.register(
            session,
            customer_key="acme",
            data=InstanceRegister(fingerprint=fingerprint, kind=kind),
            actor="test",
            now=at,
        )


async def test_register_renew_and_deregister(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    first = await register(client, backend, "host-1", environment="staging", metadata={"v": 1})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["id"].startswith("ins_") and body["weight"] == 1 and body["kind"] == "vm"
    assert body["environment"] == "staging" and body["metadata"] == {"v": 1}
    again = await register(client, backend, "host-1", environment="staging", metadata={"v": 2})
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert again.json()["metadata"] == {"v": 2}
    assert again.json()["lease_expires_at"] >= body["lease_expires_at"]
    changed = await register(client, backend, "host-1", kind="cluster")
    assert changed.status_code == 409 and changed.json()["type"].endswith("/instance-changed")
    listed = (await client.get("/v1/customers/acme/instances", headers=backend)).json()
    assert [i["fingerprint"] for i in listed["items"]] == ["host-1"]
    beat = await client.post(f"/v1/instances/{body['id']}/heartbeat", headers=backend)
    assert beat.status_code == 200 and beat.json()["id"] == body["id"]
    gone = await client.delete(f"/v1/instances/{body['id']}", headers=backend)
    assert gone.status_code == 204
    late = await client.post(f"/v1/instances/{body['id']}/heartbeat", headers=backend)
    assert late.status_code == 410 and late.json()["reason"] == "deregistered"
    assert (await client.get("/v1/customers/acme/instances", headers=backend)).json()["items"] == []


async def test_weights_cap_the_pool_and_unknown_kinds_are_422(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    # team: limit 3, kinds vm 1, container 1, cluster 4.
    cluster = await register(client, backend, "big", kind="cluster")
    assert cluster.status_code == 409
    problem = cluster.json()
    assert problem["reason"] == "instance_limit_reached" and problem["weight"] == 4
    assert problem["limit"] == 3 and problem["held"] == 0
    for n in range(3):
        assert (await register(client, backend, f"c{n}", kind="container")).status_code == 201
    full = await register(client, backend, "c3", kind="container")
    assert full.status_code == 409 and full.json()["held"] == 3
    assert full.json()["frees_at"] is not None
    odd = await register(client, backend, "x", kind="mainframe")
    assert odd.status_code == 422 and odd.json()["errors"][0]["path"] == "kind"
    entitlements = (await client.get("/v1/customers/acme/entitlements", headers=backend)).json()
    pool = entitlements["limits"]["instances"]
    assert pool["limit"] == 3 and pool["held"] == 3 and pool["count"] == 3


async def test_instance_gate_reasons(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    from tests.factories.contracts import create_contract
    from tests.factories.customers import create_customer

    # `agent` (instance: required) is in enterprise, not team: a second customer.
    await create_customer(client, admin, key="ent")
    await create_contract(client, admin, customer="ent", plan="enterprise")
    ask = {"customer": "ent"}
    assert (await check(client, backend, "agent", **ask))["reason"] == "instance_required"
    unknown = await check(client, backend, "agent", instance="nope", **ask)
    assert unknown["reason"] == "instance_unknown"
    live = await register(client, backend, "agent-1", customer="ent")
    assert live.status_code == 201
    assert (await check(client, backend, "agent", instance="agent-1", **ask))["allowed"] is True
    # With the app's bus, as a request has it: the check's cached snapshot hears the change.
    async with session_scope(app.state.sessionmaker, bus=app.state.bus) as session:
        await instances.register(
            session,
            customer_key="ent",
            data=InstanceRegister(fingerprint="agent-old", kind="vm"),
            actor="test",
            now=utcnow() - timedelta(minutes=11),  # its 10m lease lapsed a minute ago
        )
    lapsed = await check(client, backend, "agent", instance="agent-old", **ask)
    assert lapsed["allowed"] is False and lapsed["reason"] == "lease_expired"
    await client.delete(f"/v1/instances/{live.json()['id']}", headers=backend)
    after = await check(client, backend, "agent", instance="agent-1", **ask)
    assert after["reason"] == "instance_unknown"


async def test_lapsed_lease_frees_capacity_without_the_reaper_and_heartbeat_is_410(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    past = utcnow() - timedelta(minutes=11)
    old = [await _register_at(app, f"old-{n}", "vm", past) for n in range(3)]
    fresh = await register(client, backend, "new-1")
    assert fresh.status_code == 201, fresh.text  # the 3 lapsed leases no longer count
    beat = await client.post(f"/v1/instances/{old[0].instance.id}/heartbeat", headers=backend)
    assert beat.status_code == 410
    assert beat.json()["reason"] == "lease_expired" and beat.json()["ended_at"] is not None
    # Re-registering a lapsed fingerprint ends the old row at its expiry and starts a new one.
    back = await register(client, backend, "old-0")
    assert back.status_code == 201 and back.json()["id"] != old[0].instance.id
    async with session_scope(app.state.sessionmaker) as session:
        row = (
            await session.execute(
                text("SELECT ended_at, lease_expires_at, end_reason FROM instances WHERE id = :i"),
                {"i": old[0].instance.id},
            )
        ).one()
    assert row.end_reason == "expired" and row.ended_at == row.lease_expires_at


async def test_two_reapers_at_once_end_each_lapsed_lease_once(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    contract = (await client.get("/v1/customers/acme/contracts", headers=admin)).json()["items"][0]
    raised = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"instances": {"limit": 1000}, "effective_at": iso(utcnow() - timedelta(hours=2))},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert raised.status_code == 200, raised.text
    past = utcnow() - timedelta(hours=1)
    for n in range(600):  # more than one reaper batch (500)
        await _register_at(app, f"vm-{n}", "vm", past)
    maker = app.state.sessionmaker
    now = utcnow()
    first, second = await asyncio.gather(run_once(maker, now=now), run_once(maker, now=now))
    assert first["instances_expired"] + second["instances_expired"] == 600
    async with session_scope(maker) as session:
        counts = (
            await session.execute(
                text(
                    "SELECT count(*) FILTER (WHERE ended_at IS NULL) AS live, "
                    "count(*) FILTER (WHERE ended_at = lease_expires_at) AS at_expiry "
                    "FROM instances"
                )
            )
        ).one()
        audited = (
            await session.execute(
                text("SELECT count(*) FROM audit_log WHERE action = 'instance.expired'")
            )
        ).scalar_one()
    assert counts.live == 0 and counts.at_expiry == 600
    assert audited == 600
    assert (await run_once(maker, now=now))["instances_expired"] == 0


async def test_tenant_instance_quota_counts_weight(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    made = await client.post(
        "/v1/customers/acme/tenants", json={"key": "lab", "quotas": {"instances": 1}}, headers=admin
    )
    assert made.status_code == 201, made.text
    assert (await register(client, backend, "a", tenant="lab")).status_code == 201
    refused = await register(client, backend, "b", tenant="lab")
    assert refused.status_code == 409 and refused.json()["reason"] == "tenant_quota_reached"
    assert (await register(client, backend, "b")).status_code == 201


async def test_a_cached_snapshot_turns_lease_expired_at_the_expiry_by_itself(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    from tests.factories.contracts import create_contract
    from tests.factories.customers import create_customer

    await create_customer(client, admin, key="ent")
    await create_contract(client, admin, customer="ent", plan="enterprise")
    lapse_at = utcnow() + timedelta(seconds=1)
    async with session_scope(app.state.sessionmaker, bus=app.state.bus) as session:
        await instances.register(
            session,
            customer_key="ent",
            data=InstanceRegister(fingerprint="short", kind="vm"),
            actor="test",
            now=lapse_at - timedelta(minutes=10),  # a 10m lease ending a second from now
        )
    ask = {"customer": "ent", "instance": "short"}
    assert (await check(client, backend, "agent", **ask))["allowed"] is True  # now cached
    await asyncio.sleep(max(0.0, (lapse_at - utcnow()).total_seconds()) + 0.05)
    # No write, no invalidation: the snapshot was valid only until the lease's expiry.
    assert (await check(client, backend, "agent", **ask))["reason"] == "lease_expired"


async def test_reaping_a_lapsed_lease_moves_the_customers_version_and_announces_it(
    app: Any, team: str
) -> None:
    """A lapse changes what the customer holds: the change stream must hear of it (a new
    user saw `held` stay stale on a stream client after the reaper ran)."""
    from allotment.invalidation import CUSTOMER_TOPIC

    past = utcnow() - timedelta(hours=1)
    await _register_at(app, "vm-lapsed", "vm", past)
    maker = app.state.sessionmaker

    async def version() -> int:
        async with session_scope(maker) as session:
            found = await session.execute(
                text("SELECT state_version FROM customers WHERE key = 'acme'")
            )
            return int(found.scalar_one())

    heard: list[str] = []
    app.state.bus.subscribe(CUSTOMER_TOPIC, heard.append)
    try:
        before = await version()
        assert (await run_once(maker, bus=app.state.bus))["instances_expired"] == 1
        assert await version() == before + 1
        assert any(message.split()[0] == "acme" for message in heard)
    finally:
        app.state.bus._handlers[CUSTOMER_TOPIC].remove(heard.append)
