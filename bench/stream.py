"""Change-stream fan-out lag: how long after its commit a change reaches each of many clients.

    .venv/bin/python bench/stream.py [--clients 1000] [--processes 2] [--amendments 200]
                                     [--rate 10] [--customers 20] [--no-pin]

Starts a fresh database (embedded by default, or ALLOTMENT_DATABASE_URL's server; its own
data dir and database), publishes the demo policy, creates --customers customers with a
`team` contract through the API, and serves Allotment with bench/run.py's uvicorn flags (one
worker). Then --clients stream clients connect to GET /v1/stream (unfiltered: every client
gets every change, the most fan-out per change), spread over --processes client processes
(asyncio and raw sockets: one coroutine per connection, de-chunking HTTP/1.1 and splitting
events by hand). Once all are connected, a driver amends contracts at a steady --rate (a
seat limit, round-robin over the customers) until --amendments were made.

Lag = the client's receipt time (`time.time()` when the chunk holding the event was read)
− the commit time the event carries (`committed_at`, stamped by the writer just after its
commit: the bus payload's time). Same machine, same clock. Prints p50/p99/max over every
delivery, the worker's own commit → hub time (`allotment_stream_lag_seconds`), the worker's
CPU, and checks that every client got every change exactly once and no resync (exit status
1 otherwise). With 2+ cores the worker
gets core 0 to itself; the clients, the driver and PostgreSQL share the rest (--pin).
A benchmark, not a test: timings are reported, not asserted. Results:
bench/results/stream-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allotment import embedded  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from allotment.policy import demo_policy  # noqa: E402
from bench.run import BIN, LOAD_CORES, ROOT, free_port, fresh_database, pct, pin, serve  # noqa: E402
from bench.seats import mint_key  # noqa: E402

DATA_DIR = Path(tempfile.gettempdir()) / "allotment-bench-stream"
DATABASE = "allotment_bench_stream"


# -- the client processes ------------------------------------------------------------------


def _seconds(iso: bytes) -> float:
    return datetime.fromisoformat(iso.decode().rstrip("Z")).replace(tzinfo=UTC).timestamp()


class Tally:
    """What one client process's connections received."""

    def __init__(self, connections: int, expect: int) -> None:
        self.lags: list[float] = []
        self.counts = [0] * connections
        self.resyncs = [0] * connections
        self.expect = expect
        self.short = connections  # connections that have not got every change yet
        self.complete = asyncio.Event()

    def got(self, i: int, lag: float) -> None:
        self.lags.append(lag)
        self.counts[i] += 1
        if self.counts[i] == self.expect:
            self.short -= 1
            if self.short == 0:
                self.complete.set()


async def _client(port: int, key: str, tally: Tally, i: int) -> asyncio.StreamWriter:
    """Connect, and leave a task reading events into `lags` (returns once the stream's
    opening block arrived: the client is registered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(
        b"GET /v1/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
        + f"Authorization: Bearer {key}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(head.decode(errors="replace"))
    opened = asyncio.get_running_loop().create_future()

    async def read() -> None:
        pending = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")  # chunked transfer encoding
            size = int(size_line.strip(), 16)
            if size == 0:
                return
            chunk = await reader.readexactly(size + 2)
            received = time.time()
            pending += chunk[:-2]
            *blocks, pending = pending.split(b"\n\n")
            for block in blocks:
                if not opened.done():
                    opened.set_result(None)
                if b"event: customer.changed" in block:
                    data = block[block.index(b"data: ") + 6 :]
                    at = data.index(b'"committed_at":"') + 16
                    tally.got(i, received - _seconds(data[at : data.index(b'"', at)]))
                elif b"event: resync" in block:
                    tally.resyncs[i] += 1

    task = asyncio.create_task(read())
    task.add_done_callback(lambda t: opened.done() or opened.set_exception(RuntimeError("ended")))
    await opened
    _TASKS.append(task)
    return writer


_TASKS: list[asyncio.Task[None]] = []


async def client_main(port: int, key: str, connections: int, expect: int, wait_s: float) -> None:
    tally = Tally(connections, expect)
    writers = []
    for start in range(0, connections, 50):  # 50 at a time
        batch = range(start, min(connections, start + 50))
        writers += await asyncio.gather(*(_client(port, key, tally, i) for i in batch))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
    await stop  # the driver made its last amendment
    with contextlib.suppress(TimeoutError):  # then some connection missed a change
        await asyncio.wait_for(tally.complete.wait(), wait_s)
    for writer in writers:
        writer.close()
    result = {"lags": tally.lags, "counts": tally.counts, "resyncs": tally.resyncs}
    print(json.dumps(result), flush=True)


# -- the driver ----------------------------------------------------------------------------


async def seed(base: str, key: str, customers: list[str]) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"}
    starts_at = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        created = await client.post(
            "/v1/policies", content=demo_policy(), headers={"Content-Type": "application/yaml"}
        )
        created.raise_for_status()
        version = created.json()["version"]
        (await client.post(f"/v1/policies/{version}/publish")).raise_for_status()
        contracts = []
        for customer in customers:
            r = await client.post("/v1/customers", json={"key": customer, "name": customer})
            r.raise_for_status()
            r = await client.post(
                f"/v1/customers/{customer}/contracts",
                json={"plan": "team", "starts_at": starts_at, "seats": {"limit": 100}},
            )
            r.raise_for_status()
            contracts.append(r.json())
        return contracts


async def drive(base: str, key: str, contracts: list[dict[str, Any]], n: int, rate: float) -> None:
    """`n` amendments at `rate` per second, round-robin over the contracts."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        started = time.perf_counter()
        for i in range(n):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            contract = contracts[i % len(contracts)]
            answer = await client.patch(
                f"/v1/contracts/{contract['id']}",
                json={"seats": {"limit": 101 + i}},  # the seeded 100 + 1 at least: a change
                headers={"If-Match": str(contract["revision"])},
            )
            answer.raise_for_status()
            contracts[i % len(contracts)] = answer.json()


def metrics(base: str) -> dict[str, Any]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found: dict[str, Any] = {"lag_buckets": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "allotment_stream_clients":
                found["clients"] = sample.value
            elif sample.name == "allotment_stream_lag_seconds_bucket":
                found["lag_buckets"][float(sample.labels["le"])] = sample.value
    return found


def bucket_quantile(buckets: dict[float, float], q: float) -> str:
    """The upper bound of the histogram bucket holding the q-quantile ("≤ x ms")."""
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return "-"
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return "> 2.5 s" if bound == float("inf") else f"≤ {bound * 1000:g} ms"
    return "-"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--amendments", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="amendments per second")
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None,
        help="the worker on core 0; clients, driver and PostgreSQL on the rest",
    )
    # One client process (internal).
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client_main(args.port, args.key, args.clients, args.expect, 30.0))
        return

    if args.pin:
        pin(os.cpu_count() or 2)
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))  # the driver too
    settings = Settings(
        database_url=os.environ.get("ALLOTMENT_DATABASE_URL") or None,
        redis_url=os.environ.get("ALLOTMENT_REDIS_URL") or None,
        data_dir=DATA_DIR,
    )
    servers = embedded.start(settings)
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[subprocess.Popen[str]] = []
    try:
        database_url = fresh_database(servers, DATABASE)
        upgrade(database_url)
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-stream-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        admin, check = mint_key(env, "admin"), mint_key(env, "check")
        port = free_port()
        procs.append(serve(["allotment.app:create_app", "--factory"], port, env))
        worker = psutil.Process(procs[0].pid)
        base = f"http://127.0.0.1:{port}"
        customers = [f"st{i:03d}" for i in range(args.customers)]
        contracts = asyncio.run(seed(base, admin, customers))

        started = time.perf_counter()
        shares = [args.clients // args.processes] * args.processes
        shares[-1] += args.clients - sum(shares)
        for share in shares:
            clients.append(
                subprocess.Popen(
                    [
                        *LOAD_CORES,
                        str(BIN / "python"),
                        __file__,
                        "--client",
                        "--port",
                        str(port),
                        "--key",
                        check,
                        "--clients",
                        str(share),
                        "--expect",
                        str(args.amendments),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )  # fmt: skip
            )
        for proc in clients:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a client process said {line!r}")
        connected = metrics(base)["clients"]
        print(f"{int(connected)} streams connected in {time.perf_counter() - started:.1f}s")

        cpu_before = worker.cpu_times()
        driven = time.perf_counter()
        asyncio.run(drive(base, admin, contracts, args.amendments, args.rate))
        drive_s = time.perf_counter() - driven
        results = []
        for proc in clients:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        for proc in clients:
            assert proc.stdout is not None
            results.append(json.loads(proc.stdout.readline()))
        cpu_after = worker.cpu_times()
        wall = time.perf_counter() - driven
        cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / wall
        server = metrics(base)
    finally:
        for proc in clients:
            proc.kill()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
        servers.stop()

    lags = [lag for result in results for lag in result["lags"]]
    counts = [count for result in results for count in result["counts"]]
    resyncs = sum(sum(result["resyncs"]) for result in results)
    deliveries = args.clients * args.amendments
    complete = all(count == args.amendments for count in counts) and resyncs == 0
    summary = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "clients": args.clients,
        "processes": args.processes,
        "amendments": args.amendments,
        "rate_per_s": args.rate,
        "drive_s": round(drive_s, 2),
        "deliveries": len(lags),
        "expected_deliveries": deliveries,
        "resyncs": resyncs,
        "lag_p50_ms": round(statistics.median(lags) * 1000, 2) if lags else None,
        "lag_p99_ms": round(pct(lags, 0.99) * 1000, 2) if lags else None,
        "lag_max_ms": round(max(lags) * 1000, 2) if lags else None,
        "hub_lag_p50": bucket_quantile(server["lag_buckets"], 0.5),
        "hub_lag_p99": bucket_quantile(server["lag_buckets"], 0.99),
        "worker_cpu": round(cpu, 2),
        "pinned": args.pin,
        "load_average": os.getloadavg(),
    }
    print(
        f"{args.clients} clients × {args.amendments} amendments at {args.rate:g}/s "
        f"({drive_s:.1f}s): {len(lags):,} of {deliveries:,} deliveries, {resyncs} resyncs"
    )
    if lags:
        print(
            f"lag commit → client: p50 {ms(statistics.median(lags))}, "
            f"p99 {ms(pct(lags, 0.99))}, max {ms(max(lags))}"
        )
    print(
        f"commit → the worker's hub (histogram): p50 {summary['hub_lag_p50']}, "
        f"p99 {summary['hub_lag_p99']}; worker CPU {cpu:.0%} of a core during the run"
    )
    out = ROOT / "bench" / "results" / f"stream-{int(time.time())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    if not complete:
        short = sorted({count for count in counts if count != args.amendments})
        print(f"LOST OR REPEATED DELIVERIES (or resyncs): some clients got {short} changes")
        sys.exit(1)


if __name__ == "__main__":
    main()
