"""Degraded modes (docs/design.md: architecture, invariant 6), by really stopping the
servers during the test.

Redis down: checks keep answering from process memory and PostgreSQL; entries live only the
short bus-down TTL, so a write another worker made is seen within it; when Redis returns the
bus reconnects, drops what it holds (it may have missed messages) and invalidation works
across workers again.

PostgreSQL down: cached snapshots are served flagged `stale` up to `snapshot_stale_max_s`;
with nothing cached the feature's `on_outage` decides (`outage_default`); writes answer 503
with Retry-After; /readyz names postgres; never a 500. When it returns, checks are fresh.

Each test runs its own store (a redis-server, a pgserver PostgreSQL) so it can kill it, and
in-process apps (the real lifespan: engine, Redis client, bus) over ASGI.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from allotment.app import create_app
from allotment.migrate import upgrade
from tests.check.servers import PostgresServer, RedisServer, eventually
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy


@asynccontextmanager
async def running(*settings: Any, headers: dict[str, str] | None = None) -> AsyncIterator[Any]:
    """Start one in-process app per settings; yields [(app, client), …] and stops them."""
    async with AsyncExitStack() as stack:
        pairs = []
        for each in settings:
            app = create_app(each)
            await stack.enter_async_context(app.router.lifespan_context(app))
            http = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                base_url="http://test",
                headers=headers or {},
            )
            await stack.enter_async_context(http)
            pairs.append((app, http))
        yield pairs


async def _decide(http: httpx.AsyncClient, feature: str, customer: str = "acme") -> dict[str, Any]:
    response = await http.post("/v1/check", json={"customer": customer, "feature": feature})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _amend(http: httpx.AsyncClient, overrides: list[dict[str, Any]]) -> dict[str, Any]:
    contract = (await http.get("/v1/customers/acme/contracts")).json()["items"][0]
    response = await http.patch(
        f"/v1/contracts/{contract['id']}",
        json={"overrides": overrides},
        headers={"If-Match": str(contract["revision"])},
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


REVOKE_REPORTS = [{"feature": "reports", "action": "revoke", "reason": "abuse review"}]


async def _buses(apps: list[Any], connected: bool, within: float = 20.0) -> None:
    async def all_there() -> bool:
        return all(app.state.bus.connected is connected for app in apps)

    await eventually(all_there, within=within, interval=0.05)


# -- Redis down ------------------------------------------------------------------------------


async def test_redis_down_checks_keep_working_and_reconnect_drops_missed_state(
    stores: Any, client: httpx.AsyncClient, admin: dict[str, str], tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    namespace = f"{stores.namespace}-redis-down-{uuid.uuid4().hex[:8]}"

    def settings(bus_down_ttl: float) -> Any:
        return stores.settings(
            redis_url=redis.url, redis_namespace=namespace, snapshot_ttl_bus_down_s=bus_down_ttl
        )

    try:
        # Three workers on one database and one (soon dead) Redis: 1 writes, 2 has the short
        # bus-down TTL, 3 a long one (so only the reconnect can rid it of a missed change).
        async with running(settings(1.0), settings(1.0), settings(60.0), headers=admin) as pairs:
            apps = [app for app, _ in pairs]
            one, two, three = (http for _, http in pairs)
            await _buses(apps, connected=True)
            await publish_policy(one, admin, demo_document())
            await create_customer(one, admin, key="acme")
            await create_customer(one, admin, key="globex")
            await create_contract(one, admin, customer="acme", plan="team")
            await create_contract(one, admin, customer="globex", plan="starter")
            for http in (one, two, three):
                warm = await _decide(http, "reports")
                assert warm["reason"] == "ok" and warm["cache_ttl_s"] == 300

            redis.kill()
            await _buses(apps, connected=False)
            ready = await one.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["postgres"] == "ok"
            assert ready.json()["checks"]["redis"].startswith("down")

            # Checks keep answering, correctly, from memory and PostgreSQL; the TTL they
            # advertise is the short one. A customer nobody cached loads without L2.
            for http, ttl in ((one, 1), (two, 1), (three, 60)):
                decision = await _decide(http, "reports")
                assert decision["allowed"] is True and decision["reason"] == "ok"
                assert decision["stale"] is False and decision["cache_ttl_s"] == ttl
            assert (await _decide(two, "api", customer="globex"))["reason"] == (
                "feature_not_in_plan"
            )
            assert (await _decide(two, "reports", customer="globex"))["allowed"] is True

            # A write while Redis is down: acknowledged, seen at once by the worker that
            # made it, and by another worker within its short TTL (it cannot be told).
            started = time.perf_counter()
            amended = await _amend(one, REVOKE_REPORTS)
            write_s = time.perf_counter() - started
            assert amended["revision"] == 2
            assert (await _decide(one, "reports"))["reason"] == "feature_not_in_plan"

            async def two_sees() -> bool:
                return (await _decide(two, "reports"))["reason"] == "feature_not_in_plan"

            _, ttl_lag = await eventually(two_sees, within=1.0 + 5.0)
            # Worker 3 missed the broadcast and its bus-down TTL has not run out: it still
            # holds the entry from before the change, which the reconnect must drop.
            held = await _decide(three, "reports")
            assert held["reason"] == "ok" and held["contract_revision"] == 1

            redis.start()  # the same port: a restart, as after a crash
            started = time.perf_counter()
            await _buses(apps, connected=True)
            reconnect_s = time.perf_counter() - started
            after = await _decide(three, "reports")
            assert after["reason"] == "feature_not_in_plan" and after["contract_revision"] == 2
            assert after["cache_ttl_s"] == 300

            async def ready() -> bool:
                return (await one.get("/readyz")).status_code == 200

            await eventually(ready, within=10, interval=0.05)

            # Invalidation across workers works again (the 1 s bound holds with Redis up).
            for http in (two, three):
                assert (await _decide(http, "reports"))["reason"] == "feature_not_in_plan"
            await _amend(one, [])

            async def all_see() -> bool:
                decisions = [await _decide(http, "reports") for http in (two, three)]
                return all(d["reason"] == "ok" for d in decisions)

            _, bus_lag = await eventually(all_see, within=1.0, interval=0.01)
            assert bus_lag <= 1.0

            # A crash and an immediate restart (as under a supervisor): every worker's bus
            # notices and reconnects; the writer's pooled connections from before the crash
            # are dead, yet its next broadcast must still reach the others within 1 s.
            reconnects = [0, 0, 0]
            for index, app in enumerate(apps):
                app.state.bus.on_reconnect(lambda i=index: reconnects.__setitem__(i, 1))
            redis.kill()
            redis.start()

            async def all_reconnected() -> bool:
                return all(reconnects) and all(app.state.bus.connected for app in apps)

            await eventually(all_reconnected, within=20, interval=0.05)
            for http in (two, three):
                decision = await _decide(http, "reports")
                assert decision["reason"] == "ok" and decision["cache_ttl_s"] == 300
            await _amend(one, REVOKE_REPORTS)
            assert (await _decide(one, "reports"))["reason"] == "feature_not_in_plan"

            async def all_revoked() -> bool:
                decisions = [await _decide(http, "reports") for http in (two, three)]
                return all(d["reason"] == "feature_not_in_plan" for d in decisions)

            _, restart_lag = await eventually(all_revoked, within=1.0, interval=0.01)
            assert restart_lag <= 1.0
        print(
            f"redis down: write {write_s:.3f}s, seen by worker 2 after {ttl_lag:.3f}s "
            f"(bus-down TTL 1.0s); buses back {reconnect_s:.3f}s after restart; "
            f"invalidation lag after reconnect {bus_lag:.3f}s, after a quick restart "
            f"{restart_lag:.3f}s"
        )
    finally:
        redis.kill()


# -- PostgreSQL down ---------------------------------------------------------------------------


@pytest.fixture
def postgres(tmp_path: Path) -> Any:
    server = PostgresServer(tmp_path / "pg")
    try:
        yield server
    finally:
        server.close()


async def test_postgres_down_serves_stale_then_outage_defaults_and_recovers(
    stores: Any, postgres: PostgresServer
) -> None:
    url = postgres.create_database("allotment")
    upgrade(url)
    settings = stores.settings(
        database_url=url,
        redis_namespace=f"{stores.namespace}-pg-down-{uuid.uuid4().hex[:8]}",
        # An entry is fresh for 0.5 s, then reloaded; when the reload fails it is served
        # stale for up to snapshot_stale_max_s (default 5 min).
        snapshot_ttl_s=0.5,
        # Shorter than the outage below: keys verified before it keep working from the
        # last-known principal while PostgreSQL cannot confirm them.
        auth_cache_ttl_s=0.3,
        auth_cache_ttl_bus_up_s=0.3,
    )
    async with running(settings) as [(app, http)]:
        admin = await create_key(app, scopes=["admin"])
        checker = await create_key(app, scopes=["check"])
        http.headers.update(admin)
        await publish_policy(http, admin, demo_document())
        for key in ("acme", "globex"):
            await create_customer(http, admin, key=key)
            await create_contract(http, admin, customer=key, plan="team")
        http.headers.update(checker)  # checks run with the check scope from here on
        warm = {f: await _decide(http, f) for f in ("reports", "sso", "dashboards")}
        assert [d["reason"] for d in warm.values()] == ["ok", "feature_not_in_plan", "ok"]
        assert (await _decide(http, "reports", customer="ghost"))["reason"] == "customer_unknown"

        postgres.stop()
        await asyncio.sleep(0.6)  # past the 0.5 s freshness: every check below needs PostgreSQL

        # A cached customer: the cached answer, flagged stale.
        for feature, before in warm.items():
            decision = await _decide(http, feature)
            assert decision["stale"] is True
            assert (decision["allowed"], decision["reason"]) == (
                before["allowed"],
                before["reason"],
            )
            assert decision["contract_revision"] == 1 and decision["policy_version"] == 1
        unknown = await _decide(http, "teleport")
        assert unknown["reason"] == "feature_unknown" and unknown["stale"] is True
        cached_ghost = await _decide(http, "dashboards", customer="ghost")
        assert cached_ghost["reason"] == "customer_unknown" and cached_ghost["allowed"] is False

        # Nothing cached: the feature's on_outage decides (dashboards, viewer: allow).
        expected = {
            "dashboards": True,
            "viewer": True,
            "reports": False,
            "editor": False,
            "sso": False,
            "teleport": False,  # unknown feature: denied
        }
        for feature, allowed in expected.items():
            decision = await _decide(http, feature, customer="globex")
            assert decision["reason"] == "outage_default", decision
            assert decision["allowed"] is allowed and decision["stale"] is True
        batch = await http.post(
            "/v1/check/batch", json={"customer": "globex", "features": ["dashboards", "reports"]}
        )
        assert batch.status_code == 200
        assert [(d["allowed"], d["reason"]) for d in batch.json()["decisions"]] == [
            (True, "outage_default"),
            (False, "outage_default"),
        ]
        entitlements = await http.get("/v1/customers/globex/entitlements")
        assert entitlements.status_code == 503

        # Writes: 503 with Retry-After, never a 500. Readiness names PostgreSQL.
        http.headers.update(admin)
        write = await http.post("/v1/customers", json={"key": "initech", "name": "Initech"})
        assert write.status_code == 503, write.text
        assert int(write.headers["retry-after"]) > 0
        assert write.headers["content-type"] == "application/problem+json"
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"].startswith("down")
        assert "postgres" in ready.json()["detail"] and ready.headers["retry-after"]
        assert ready.json()["checks"]["redis"] == "ok"

        # PostgreSQL returns: fresh answers again, and writes succeed.
        postgres.start()
        started = time.perf_counter()

        async def fresh() -> bool:
            return (await _decide(http, "reports"))["stale"] is False

        await eventually(fresh, within=30, interval=0.1)
        recovered_s = time.perf_counter() - started
        assert (await _decide(http, "reports", customer="globex"))["reason"] == "ok"
        created = await http.post("/v1/customers", json={"key": "initech", "name": "Initech"})
        assert created.status_code == 201, created.text
        assert (await http.get("/readyz")).status_code == 200
        print(f"postgres back: fresh checks {recovered_s:.3f}s after restart")


async def test_postgres_down_stale_entries_expire_after_the_staleness_bound(
    stores: Any, postgres: PostgresServer
) -> None:
    url = postgres.create_database("allotment")
    upgrade(url)
    settings = stores.settings(
        database_url=url,
        redis_namespace=f"{stores.namespace}-pg-stale-{uuid.uuid4().hex[:8]}",
        snapshot_ttl_s=0.2,
        snapshot_stale_max_s=1.0,
        auth_cache_ttl_s=600.0,
    )
    async with running(settings) as [(app, http)]:
        admin = await create_key(app, scopes=["admin"])
        http.headers.update(admin)
        await publish_policy(http, admin, demo_document())
        await create_customer(http, admin, key="acme")
        await create_contract(http, admin, customer="acme", plan="team")
        before = time.monotonic()
        assert (await _decide(http, "reports"))["reason"] == "ok"
        assert (await _decide(http, "dashboards"))["reason"] == "ok"
        after = time.monotonic()  # acme's entry was loaded between `before` and `after`

        postgres.stop()
        await asyncio.sleep(max(0.0, before + 0.3 - time.monotonic()))
        if time.monotonic() - before < 0.9:  # surely inside the 1 s bound: served stale
            stale = await _decide(http, "reports")
            assert stale["stale"] is True and stale["reason"] == "ok"
        await asyncio.sleep(max(0.0, after + 1.2 - time.monotonic()))
        expired = await _decide(http, "reports")
        assert expired["reason"] == "outage_default" and expired["allowed"] is False
        assert expired["stale"] is True
        allowed = await _decide(http, "dashboards")
        assert allowed["reason"] == "outage_default" and allowed["allowed"] is True


async def test_postgres_down_another_worker_answers_from_redis_l2(
    stores: Any, postgres: PostgresServer
) -> None:
    """A worker that never loaded a customer (a restart, a new replica) still answers during
    an outage from the rows another worker left in Redis — flagged stale, and current as of
    the last change (an invalidation deletes the L2 entry; the next load rewrites it)."""
    url = postgres.create_database("allotment")
    upgrade(url)
    namespace = f"{stores.namespace}-pg-l2-{uuid.uuid4().hex[:8]}"
    first = stores.settings(database_url=url, redis_namespace=namespace, snapshot_ttl_s=0.3)
    second = stores.settings(database_url=url, redis_namespace=namespace, snapshot_ttl_s=0.3)
    async with running(first, second) as [(app1, http1), (app2, http2)]:
        await _buses([app1, app2], connected=True)
        admin = await create_key(app1, scopes=["admin"])
        http1.headers.update(admin)
        http2.headers.update(admin)
        await publish_policy(http1, admin, demo_document())
        for key in ("acme", "globex"):
            await create_customer(http1, admin, key=key)
            await create_contract(http1, admin, customer=key, plan="team")
        assert (await http2.get("/v1/api-keys")).status_code == 200  # app2 knows the key
        assert (await _decide(http1, "reports"))["reason"] == "ok"
        await _amend(http1, REVOKE_REPORTS)  # deletes acme's L2 entry everywhere
        assert (await _decide(http1, "reports"))["reason"] == "feature_not_in_plan"
        await asyncio.sleep(0.1)  # the L2 write runs off the request path

        postgres.stop()
        shared = await _decide(http2, "reports")
        assert shared["stale"] is True
        assert shared["reason"] == "feature_not_in_plan" and shared["contract_revision"] == 2
        assert (await _decide(http2, "dashboards"))["allowed"] is True
        never_loaded = await _decide(http2, "reports", customer="globex")
        assert never_loaded["reason"] == "outage_default" and never_loaded["allowed"] is False


async def test_postgres_down_never_lifts_a_hard_limit_and_stale_clears_when_it_returns(
    stores: Any, postgres: PostgresServer
) -> None:
    """Invariant 6 for meters: while PostgreSQL cannot be read, a metered check goes by the
    last use this worker read (flagged stale), and with none a hard limit denies; it never
    reads the use as zero. Once PostgreSQL is back, a cached customer's answers stop being
    flagged stale without waiting for another customer's load to clear the mark."""
    url = postgres.create_database("allotment")
    upgrade(url)
    settings = stores.settings(
        database_url=url,
        redis_namespace=f"{stores.namespace}-pg-meter-{uuid.uuid4().hex[:8]}",
        auth_cache_ttl_s=60.0,
        auth_cache_ttl_bus_up_s=60.0,
    )
    async with running(settings) as [(app, http)]:
        admin = await create_key(app, scopes=["admin"])
        http.headers.update(admin)
        await publish_policy(http, admin, demo_document())
        for key in ("acme", "globex"):
            await create_customer(http, admin, key=key)
            await create_contract(http, admin, customer=key, plan="team")  # api_calls: 100,000 hard
        spent = {"specversion": "1.0", "id": "big", "source": "tests", "type": "api.call",
                 "subject": "acme", "data": {"count": 100_500}}  # fmt: skip
        sent = await http.post("/v1/events", json=spent)
        assert sent.status_code in (200, 202), sent.text
        over = await _decide(http, "api")
        assert (over["allowed"], over["reason"]) == (False, "usage_limit_reached")
        assert (await _decide(http, "reports", customer="globex"))["allowed"] is True  # cached
        assert "globex" not in app.state.checker.usage._entries  # its use never read

        postgres.stop()
        await asyncio.sleep(1.2)  # past the use's 1 s bound: the next metered check rereads
        try:
            during = await _decide(http, "api")
            assert (during["allowed"], during["reason"], during["stale"]) == (
                False,
                "usage_limit_reached",
                True,
            )
            assert during["limit"]["used"] == 100_500  # the last use read, not zero
            unread = await _decide(http, "api", customer="globex")
            assert (unread["allowed"], unread["reason"], unread["stale"]) == (
                False,
                "outage_default",
                True,
            )
            # A customer nothing cached: its load fails and marks PostgreSQL down, so even
            # fresh cached snapshots are flagged stale from then on.
            assert (await _decide(http, "reports", customer="ghost"))["reason"] == "outage_default"
            assert (await _decide(http, "reports"))["stale"] is True
        finally:
            postgres.start()

        async def fresh() -> bool:
            return (await _decide(http, "reports"))["stale"] is False

        ok, _ = await eventually(fresh, within=10.0, interval=0.2)
        assert ok
        after = await _decide(http, "api")
        assert (after["allowed"], after["reason"], after["stale"]) == (
            False,
            "usage_limit_reached",
            False,
        )
