"""The read replica under a write load: how far it lags, and checks with 1 and 2 workers.

    .venv/bin/python bench/replica.py [--duration 15] [--concurrency 16] [--batch 20]
                                      [--readers 4] [--checks 10]

Starts a PostgreSQL primary and its streaming replica (tests/scale/pair.py: `pg_basebackup
-R`, two real server processes), a redis-server and one uvicorn worker with
ALLOTMENT_DATABASE_REPLICA_URL set, then:

1. the write load: --concurrency tasks POST /v1/events batches of --batch new events for
   --duration seconds, while every 0.2 s the primary's pg_stat_replication is read (the
   replica's `replay_lag`, PostgreSQL's own measure, and the bytes of WAL not yet replayed)
   and the worker's /metrics (`allotment_replica_lag_seconds`, the upper bound the service
   routes by); printed as p50 / p99 / max. Meanwhile --readers tasks read customers' usage
   (GET /v1/customers/{key}/usage, the customer's events landing meanwhile), half through
   the worker taking the events and half through the other: the reads by store and reason,
   per worker, show how many the replica could serve.
2. checks (--checks seconds each, after a warm-up): POST /v1/check from --concurrency tasks
   against 1 worker, then 2 (a second process, the client spreading its requests over
   both), cold snapshot loads included (each task cycles over 50 customers and the worker's
   L1 is what a running service has: warm). Throughput only; on a shared machine it says
   more about the cores than about the replica.

A benchmark, not a test: nothing is asserted. Writes bench/results/replica-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.check.servers import RedisServer, Worker, free_port  # noqa: E402
from tests.conftest import SIGNING_SECRET  # noqa: E402
from tests.factories.policies_for_contracts import demo_document, publish_policy  # noqa: E402
from tests.faults.cluster import mint_key  # noqa: E402
from tests.scale.pair import Pair, binaries  # noqa: E402

from allotment.migrate import upgrade  # noqa: E402

CUSTOMERS = 50


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`, from Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        metric_name, _, rest = head.partition("{")
        if metric_name != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


async def seed(base: str, admin: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=base, headers=admin, timeout=30) as http:
        await publish_policy(http, admin, demo_document())
        for i in range(CUSTOMERS):
            key = f"c{i}"
            (await http.post("/v1/customers", json={"key": key, "name": key})).raise_for_status()
            contract = await http.post(
                f"/v1/customers/{key}/contracts",
                json={"plan": "team", "kind": "standard", "starts_at": "2026-01-01T00:00:00Z"},
            )
            contract.raise_for_status()


async def write_load(
    base: str,
    admin: dict[str, str],
    pair: Pair,
    read_bases: list[str],
    *,
    duration: float,
    concurrency: int,
    batch: int,
    readers: int,
) -> dict[str, Any]:
    stop = time.monotonic() + duration
    sent = [0]
    samples: dict[str, list[float]] = {"replay_lag_s": [], "behind_bytes": [], "bound_s": []}

    async def writer(task: int) -> None:
        async with httpx.AsyncClient(base_url=base, headers=admin, timeout=30) as http:
            n = 0
            while time.monotonic() < stop:
                events = [
                    {
                        "specversion": "1.0",
                        "id": f"w{task}-{n}-{i}",
                        "source": "bench",
                        "type": "api.call",
                        "subject": f"c{(task + i) % CUSTOMERS}",
                        "data": {"count": 1},
                    }
                    for i in range(batch)
                ]
                n += 1
                response = await http.post(
                    "/v1/events",
                    content=json.dumps(events),
                    headers={"Content-Type": "application/cloudevents-batch+json"},
                )
                if response.status_code == 200:
                    sent[0] += batch

    async def sampler() -> None:
        import psycopg

        async with (
            await psycopg.AsyncConnection.connect(pair.primary.url(), autocommit=True) as conn,
            httpx.AsyncClient(base_url=base, timeout=5) as http,
        ):
            while time.monotonic() < stop:
                row = await (
                    await conn.execute(
                        "SELECT extract(epoch FROM replay_lag), "
                        "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) "
                        "FROM pg_stat_replication"
                    )
                ).fetchone()
                if row is not None:
                    samples["replay_lag_s"].append(float(row[0] or 0.0))
                    samples["behind_bytes"].append(float(row[1] or 0.0))
                text = (await http.get("/metrics")).text
                samples["bound_s"].append(metric(text, "allotment_replica_lag_seconds"))
                await asyncio.sleep(0.2)

    read = [0]

    async def reader(task: int) -> None:
        where = read_bases[task % len(read_bases)]
        async with httpx.AsyncClient(base_url=where, headers=admin, timeout=30) as http:
            n = task
            while time.monotonic() < stop:
                path = f"/v1/customers/c{n % CUSTOMERS}/usage"
                response = await http.get(path, params={"meter": "api_calls"})
                n += 7
                if response.status_code == 200:
                    read[0] += 1

    started = time.monotonic()
    await asyncio.gather(
        sampler(),
        *(writer(t) for t in range(concurrency)),
        *(reader(t) for t in range(readers)),
    )
    elapsed = time.monotonic() - started
    reads: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=5) as http:
        for where in read_bases:
            text = (await http.get(f"{where}/metrics")).text
            reads["ingesting worker" if where == base else "other worker"] = {
                f"{store}/{reason}": metric(
                    text, "allotment_replica_reads_total", store=store, reason=reason
                )
                for store, reason in (
                    ("replica", "served"),
                    ("primary", "changed"),
                    ("primary", "behind"),
                    ("primary", "lagging"),
                    ("primary", "down"),
                    ("primary", "failed"),
                )
            }
    return {
        "events_per_s": round(sent[0] / elapsed, 1),
        "usage_reads_per_s": round(read[0] / elapsed, 1),
        **{
            name: {
                "p50": round(pct(values, 0.5), 4),
                "p99": round(pct(values, 0.99), 4),
                "max": round(max(values, default=float("nan")), 4),
            }
            for name, values in samples.items()
        },
        "reads": reads,
    }


async def checks(
    bases: list[str], backend: dict[str, str], *, duration: float, concurrency: int
) -> float:
    done = [0]

    async def task(i: int, until: float, count: bool) -> None:
        base = bases[i % len(bases)]
        async with httpx.AsyncClient(base_url=base, headers=backend, timeout=30) as http:
            n = i
            while time.monotonic() < until:
                body = {"customer": f"c{n % CUSTOMERS}", "feature": "reports"}
                response = await http.post("/v1/check", json=body)
                n += 1
                if count and response.status_code == 200:
                    done[0] += 1

    warm = time.monotonic() + 2
    await asyncio.gather(*(task(i, warm, False) for i in range(concurrency)))
    started = time.monotonic()
    await asyncio.gather(*(task(i, started + duration, True) for i in range(concurrency)))
    return round(done[0] / (time.monotonic() - started), 1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--checks", type=float, default=10)
    args = parser.parse_args()
    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries with pg_basebackup")
    workdir = Path(tempfile.mkdtemp(prefix="allotment-replica-bench-"))
    pair = Pair.start(workdir / "pg", bin_dir)
    redis = RedisServer(workdir / "redis")
    workers: list[Worker] = []
    try:
        database_url = pair.create_database("allotment")
        upgrade(database_url)
        redis.start()
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_DATABASE_REPLICA_URL": pair.replica.url("allotment"),
            "ALLOTMENT_REDIS_URL": redis.url,
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "ALLOTMENT_SIGNING_SECRET": SIGNING_SECRET,
        }
        for i in range(2):
            port = free_port()
            workers.append(Worker(env, port, workdir / f"worker-{i}.log"))
        for worker in workers:
            await worker.wait_ready()
        admin = await mint_key(database_url, ["admin"], "bench")
        backend = await mint_key(database_url, ["check"], "bench-checks")
        await seed(workers[0].base_url, admin)
        result: dict[str, Any] = {"args": vars(args)}
        result["write_load"] = await write_load(
            workers[0].base_url,
            admin,
            pair,
            [w.base_url for w in workers],
            duration=args.duration,
            concurrency=args.concurrency,
            batch=args.batch,
            readers=args.readers,
        )
        result["checks_per_s"] = {
            "1 worker": await checks(
                [workers[0].base_url], backend, duration=args.checks, concurrency=args.concurrency
            ),
            "2 workers": await checks(
                [w.base_url for w in workers],
                backend,
                duration=args.checks,
                concurrency=args.concurrency,
            ),
        }
        print(json.dumps(result, indent=2))
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / f"replica-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result))
    finally:
        for worker in workers:
            worker.terminate()
        redis.kill()
        pair.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
