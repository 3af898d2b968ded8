"""The read replica with two real PostgreSQL processes: a primary and a streaming standby.

One app (in process) reads through `ALLOTMENT_DATABASE_REPLICA_URL`; writes go through its
API. A "hidden" write is made straight on the primary with the replica's replay paused: no
bus message, so only the store that answered tells it apart: the replica does not have it
yet, the primary does. docs/scale-out.md, "Read replica".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from allotment.app import create_app
from allotment.config import Settings
from allotment.migrate import upgrade
from tests.check.servers import RedisServer, eventually
from tests.conftest import SIGNING_SECRET
from tests.factories.contracts import error_paths
from tests.factories.customers import create_customer
from tests.factories.usage import event, send
from tests.scale.pair import Pair, binaries
from tests.scale.world import acme_on_team

pytestmark = pytest.mark.scale

MAX_LAG_S = 3.0  # the bound under test; measured every CHECK_S
CHECK_S = 0.2


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pair, str, RedisServer]]:
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip(
            "no PostgreSQL binaries with pg_basebackup (pgserver's, or /usr/lib/postgresql/*/bin)"
        )
    workdir = tmp_path_factory.mktemp("replica")
    pair = Pair.start(workdir / "pg", bin_dir)
    redis = RedisServer(workdir / "redis")
    try:
        database_url = pair.create_database("allotment")
        upgrade(database_url)
        redis.start()
        yield pair, database_url, redis
    finally:
        redis.kill()
        pair.close()


def settings(pair: tuple[Pair, str, RedisServer]) -> Settings:
    servers, database_url, redis = pair
    return Settings(
        database_url=database_url,
        database_replica_url=servers.replica.url("allotment"),
        redis_url=redis.url,
        redis_namespace="replica-tests",
        log_level="WARNING",
        signing_secret=SIGNING_SECRET,  # type: ignore[arg-type]
        replica_max_lag_s=MAX_LAG_S,
        replica_check_s=CHECK_S,
    )


@pytest.fixture(scope="module")
async def app(pair: tuple[Pair, str, RedisServer]) -> AsyncIterator[Any]:
    application = create_app(settings(pair))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def world(app: Any) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """acme on the team plan, with 5 API calls recorded; a client and a finance+admin key."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        admin = await acme_on_team(app, client)
        response = await send(client, admin, event("e-1", data={"count": 5}))
        assert response.status_code in (200, 201, 202), response.text
        yield client, admin


def reads(store: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "allotment_replica_reads_total", {"store": store, "reason": reason}
    )
    return value or 0.0


async def usage_total(client: httpx.AsyncClient, headers: dict[str, str], key: str) -> Decimal:
    response = await client.get(
        f"/v1/customers/{key}/usage", params={"meter": "api_calls"}, headers=headers
    )
    assert response.status_code == 200, response.text
    return Decimal(response.json()["total"])


async def caught_up(app: Any) -> None:
    """Until the replica is measured to hold everything committed so far."""
    replica = app.state.replica
    since = time.monotonic()
    await eventually(lambda: _true(replica.up and (replica.caught_up_at or 0) > since), within=20)


async def _true(value: bool) -> bool:
    return value


def hidden_write(servers: Pair, database_url: str, amount: int) -> None:
    """Add `amount` API calls to acme straight on the primary: no bus message, no note."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE usage_counters SET value = value + %s "
            "WHERE customer_id = (SELECT id FROM customers WHERE key = 'acme') "
            "AND meter = 'api_calls'",
            (amount,),
        )


def bump_state_version(database_url: str) -> int:
    """Move acme's state version straight on the primary (no announcement); returns it."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "UPDATE customers SET state_version = state_version + 1 WHERE key = 'acme' "
            "RETURNING state_version"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def paused(pair: tuple[Pair, str, RedisServer], app: Any) -> AsyncIterator[Pair]:
    """The replica caught up, then its replay paused for the test; resumed after."""
    servers = pair[0]
    await caught_up(app)
    servers.pause_replay()
    try:
        yield servers
    finally:
        servers.resume_replay()
        await caught_up(app)


async def test_reads_are_served_by_the_replica(
    app: Any, world: tuple[httpx.AsyncClient, dict[str, str]], pair: Any, paused: Pair
) -> None:
    client, admin = world
    before = await usage_total(client, admin, "acme")
    served = reads("replica", "served")
    hidden_write(paused, pair[1], 1000)
    # Within the lag bound, the usage read and a snapshot load are the replica's: the
    # hidden write is not there.
    assert await usage_total(client, admin, "acme") == before
    app.state.checker.snapshots.clear()
    check = await client.post(
        "/v1/check", json={"customer": "acme", "feature": "sso"}, headers=admin
    )
    assert check.status_code == 200, check.text
    period = time.strftime("%Y-%m", time.gmtime())
    preview = await client.get("/v1/invoice-preview", params={"period": period}, headers=admin)
    assert preview.status_code == 200, preview.text
    assert reads("replica", "served") >= served + 3
    # A client that saw a newer state version of acme (the hidden write moved it) asks for
    # it: the replica has an older one, so the primary answers.
    version = bump_state_version(pair[1])
    newer = {**admin, "Allotment-State-Version": str(version)}
    assert await usage_total(client, newer, "acme") == before + 1000
    older = {**admin, "Allotment-State-Version": str(version - 1)}
    assert await usage_total(client, older, "acme") == before
    bad = await client.get(
        "/v1/customers/acme/usage",
        params={"meter": "api_calls"},
        headers={**admin, "Allotment-State-Version": "seven"},
    )
    assert bad.status_code == 422, bad.text
    assert error_paths(bad) == ["header.Allotment-State-Version"]
    # Past the bound (replay still paused), reads are the primary's: the write shows.
    lagging = reads("primary", "lagging")
    await eventually(lambda: _true(app.state.replica.lag_s > MAX_LAG_S), within=20)
    assert await usage_total(client, admin, "acme") == before + 1000
    assert reads("primary", "lagging") > lagging
    hidden_write(paused, pair[1], -1000)


async def test_a_write_is_read_back_at_once_with_replay_paused(
    app: Any, world: tuple[httpx.AsyncClient, dict[str, str]], paused: Pair
) -> None:
    client, admin = world
    before = await usage_total(client, admin, "acme")
    changed, behind = reads("primary", "changed"), reads("primary", "behind")
    response = await send(client, admin, event("e-paused", data={"count": 7}))
    assert response.status_code in (200, 201, 202), response.text
    assert await usage_total(client, admin, "acme") == before + 7
    # A customer the replica has never seen: its snapshot and its usage are the primary's.
    await create_customer(client, admin, key="beta")
    assert await usage_total(client, admin, "beta") == 0
    check = await client.post(
        "/v1/check", json={"customer": "beta", "feature": "sso"}, headers=admin
    )
    assert check.json()["reason"] != "customer_unknown", check.text
    assert reads("primary", "changed") > changed
    assert reads("primary", "behind") + reads("primary", "changed") > behind + changed + 1


async def test_a_write_through_another_process_is_seen_once_it_is_heard(
    app: Any, world: tuple[httpx.AsyncClient, dict[str, str]], pair: Any, paused: Pair
) -> None:
    """A second app (another process, as far as the bus can tell) creates a customer with
    the replica's replay paused; this one reads it back as soon as the bus delivers the
    announcement: from the primary, since the replica has not replayed it."""
    client, admin = world
    other = create_app(settings(pair))
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as writer:
            await create_customer(writer, admin, key="gamma")

        async def read_back() -> bool:
            response = await client.get(
                "/v1/customers/gamma/usage", params={"meter": "api_calls"}, headers=admin
            )
            assert response.status_code in (200, 404), response.text
            return response.status_code == 200

        await eventually(read_back, within=10)
    # The replica still lacks it: the answer was the primary's.
    gamma = "SELECT count(*) FROM customers WHERE key = 'gamma'"
    assert paused.replica.sql(gamma, database="allotment") == [(0,)]


async def test_a_stopped_replica_costs_no_error_and_is_used_again(
    app: Any, world: tuple[httpx.AsyncClient, dict[str, str]], pair: Any
) -> None:
    client, admin = world
    servers: Pair = pair[0]
    await caught_up(app)
    expected = await usage_total(client, admin, "acme")
    servers.stop_replica()
    try:
        failed_or_down = reads("primary", "failed") + reads("primary", "down")
        for _ in range(3):  # the first may find it gone, the next find it marked down
            assert await usage_total(client, admin, "acme") == expected
            app.state.checker.snapshots.clear()
            check = await client.post(
                "/v1/check", json={"customer": "acme", "feature": "sso"}, headers=admin
            )
            assert check.status_code == 200, check.text
            assert check.json().get("stale") is not True
        assert reads("primary", "failed") + reads("primary", "down") > failed_or_down
    finally:
        servers.start_replica()
    await caught_up(app)
    served = reads("replica", "served")
    assert await usage_total(client, admin, "acme") == expected
    assert reads("replica", "served") > served


def unusable(reason: str) -> float:
    value = REGISTRY.get_sample_value("allotment_replica_unusable_total", {"reason": reason})
    return value or 0.0


def other_database(servers: Pair) -> str:
    """A second Allotment database on the same primary, on the standby too: the replica URL
    of a deployment that names the wrong one."""
    name = "allotment_other"
    if not servers.primary.sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        upgrade(servers.create_database(name))
    return servers.replica.url(name)


@pytest.mark.parametrize(
    ("case", "reason", "level", "says"),
    [
        ("another database on the standby", "other_database", "error", "'allotment_other'"),
        ("another cluster", "other_cluster", "error", "system_identifier"),
        ("the primary's own URL", "not_standby", "warning", "the primary's own URL"),
        ("nothing listening", "unreachable", "warning", "refused"),
        ("no such database", "unreachable", "warning", 'database "nowhere" does not exist'),
    ],
)
async def test_a_replica_that_is_not_a_copy_of_this_database_is_refused_and_said_why(
    app: Any,
    world: tuple[httpx.AsyncClient, dict[str, str]],
    pair: Any,
    stores: Any,
    case: str,
    reason: str,
    level: str,
    says: str,
) -> None:
    """The operator's trial: a replica URL naming another deployment's standby answered
    checks and usage reads from the other database. Every measurement verifies the
    replica's system_identifier, database and recovery against the primary's; a replica
    failing one is down from the start, reads are the primary's, and the log says which
    check failed once (not at every measurement)."""
    import structlog

    from tests.check.servers import free_port

    client, admin = world
    servers: Pair = pair[0]
    await caught_up(app)
    expected = await usage_total(client, admin, "acme")
    replica_url = {
        "another database on the standby": lambda: other_database(servers),
        "another cluster": lambda: stores.database_url,
        "the primary's own URL": lambda: pair[1],
        "nothing listening": lambda: f"postgresql://postgres@127.0.0.1:{free_port()}/allotment",
        "no such database": lambda: servers.replica.url("nowhere"),
    }[case]()
    if case == "another database on the standby":
        await eventually(
            lambda: _true(bool(servers.replica.sql("SELECT 1", "allotment_other"))), within=20
        )
    counted = unusable(reason)
    wrong = create_app(settings(pair).model_copy(update={"database_replica_url": replica_url}))
    with structlog.testing.capture_logs() as logs:
        async with wrong.router.lifespan_context(wrong):

            async def measured() -> bool:  # a few times (or, taken for a copy, up and serving)
                return bool(wrong.state.replica.up or unusable(reason) >= counted + 3)

            await eventually(measured, within=20)
            transport = httpx.ASGITransport(app=wrong)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
                assert await usage_total(other, admin, "acme") == expected
                wrong.state.checker.snapshots.clear()
                check = await other.post(
                    "/v1/check", json={"customer": "acme", "feature": "sso"}, headers=admin
                )
                assert check.status_code == 200, check.text
                assert check.json()["reason"] != "customer_unknown", check.text
            assert wrong.state.replica.up is False
            assert wrong.state.replica.down_reason == reason
    said = [
        entry for entry in logs if entry["event"] == "replica_down" and entry["reason"] == reason
    ]
    assert len(said) == 1, logs  # once, however many measurements found it so
    assert said[0]["log_level"] == level and says in said[0]["error"], said
