"""Usage events and metered checks: ingestion, metered checks, cross-worker lag
(docs/design.md, "Targets").

    .venv/bin/python bench/events.py [--duration 10] [--connections 8] [--check-connections 32]
                                     [--customers 50] [--batch 500] [--lag-rounds 20]
                                     [--profile] [--trace-usage]

Starts a fresh database (embedded by default, or ALLOTMENT_DATABASE_URL's server; its own
data dir and database, so it collides with neither the tests nor the other benchmarks),
publishes the demo policy, creates --customers customers on plan `team` (meter `api_calls`,
hard limit 100,000 a month) and --lag-rounds customers whose contract overrides that limit
to 10, serves Allotment and the bare reference (`bench/bare.py`) with bench/run.py's uvicorn
flags (one worker each), and measures, in one run:

    batches   POST /v1/events, `application/cloudevents-batch+json`, --batch events each
              (type api.call, data.count 1-3, subjects spread over the customers, time a few
              seconds ago); 10 % of each batch are copies of events accepted before the run
              (a pool of --pool events sent first), the rest new ids (run-thread-counter, so
              unique across wrk threads and connections). Every response is read: it must say
              accepted = batch - dups, duplicates = dups, rejected = [].
    single    POST /v1/events, `application/cloudevents+json`, one new event per request
    checks    warm POST /v1/check for feature `api` (metered: a usage read per customer at
              most every ALLOTMENT_USAGE_REFRESH_S), the bare reference, and feature
              `reports` (plain), with the same wrk settings one after the other
    lag       a second worker (worker B, another uvicorn process on the same stores) is polled
              with /v1/check while one event that takes a customer over its hard limit of 10
              is sent to worker A; the lag is from A's acknowledgement to the first answer of
              B saying usage_limit_reached (and from the send, in brackets); worker A itself
              must deny at once

Then it checks exactness in SQL: the bench's event ids in `usage_event_ids` equal the rows in
`usage_events` and the accepted events the service acknowledged (its request metric times
the accepted per response; wrk stops with requests in flight that committed but whose
answers it never read), and the `api_calls` counters (value and events) of the bench
customers equal the sum of the accepted events' `data.count` (and their number), which is
also what the ids imply. Per run it prints the CPU the server, PostgreSQL and wrk used,
PostgreSQL's transactions, scans of usage_counters and connections opened; `--profile`
samples worker A with py-spy (where its CPU goes) and pg_stat_activity (what its connections
wait for) during each of its runs. A benchmark, not a test: timings are
reported, not asserted; only inexact totals make it exit non-zero. `--trace-usage` starts
worker A through a wrapper that times every usage read a metered check waits for, and how
many reads of one customer were in flight at once (an instrumented run: compare its figures
with each other, not with a plain run). Results:
bench/results/events-<time>.json. Needs `wrk` (apt-get install wrk); --profile needs py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allotment import embedded  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from allotment.policy import demo_policy  # noqa: E402
from bench.run import BIN, ROOT, SERVER_FLAGS, free_port, fresh_database, pct, serve  # noqa: E402
from bench.run import LUA as CHECK_LUA  # noqa: E402
from bench.seats import (  # noqa: E402
    cpu_seconds,
    mint_key,
    postgres_processes,
    settle,
    summarise_profile,
)

PLAN = "team"
METER, EVENT_TYPE, METERED_FEATURE, PLAIN_FEATURE = "api_calls", "api.call", "api", "reports"
LAG_LIMIT = 10
DATA_DIR = Path(tempfile.gettempdir()) / "allotment-bench-events"
DATABASE = "allotment_bench_events"
BATCH_MEDIA, SINGLE_MEDIA = "application/cloudevents-batch+json", "application/cloudevents+json"

# One event: data.count = n % 3 + 1, subject customers[n % #customers]. Pool ids
# "<pool>-<k>" and new ids "<run>-<thread>-<n>" carry their n, so SQL can recompute each
# accepted event's count from its id alone. Responses are checked one by one in response().
LUA = """
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
local customers = {%(customers)s}
local ncust = #customers
local run, pool, source, at = "%(run)s", "%(pool)s", "%(source)s", "%(time)s"
local batch, dups, poolsize = %(batch)d, %(dups)d, %(poolsize)d
local hdrs = {["Content-Type"]="%(media)s", ["Authorization"]="Bearer %(key)s"}
local function event(id, n)
  return '{"specversion":"1.0","id":"' .. id .. '","source":"' .. source ..
    '","type":"%(type)s","subject":"' .. customers[n %% ncust + 1] .. '","time":"' .. at ..
    '","data":{"count":' .. (n %% 3 + 1) .. '}}'
end
function init(args)
  n, accepted, duplicates, rejected, bad, non2xx = 0, 0, 0, 0, 0, 0
  math.randomseed(os.time() * 1000 + tid)
end
function request()
  local body
  if batch == 0 then
    n = n + 1
    body = event(run .. "-" .. tid .. "-" .. n, n)
  else
    local parts = {}
    for i = 1, batch - dups do
      n = n + 1
      parts[#parts + 1] = event(run .. "-" .. tid .. "-" .. n, n)
    end
    local picked = {}
    while #parts < batch do
      local k = math.random(0, poolsize - 1)
      if not picked[k] then
        picked[k] = true
        -- duplicates go in among the new events, not only at the end
        table.insert(parts, math.random(1, #parts + 1), event(pool .. "-" .. k, k))
      end
    end
    body = "[" .. table.concat(parts, ",") .. "]"
  end
  return wrk.format("POST", "/v1/events", hdrs, body)
end
function response(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1; return end
  local a, d = string.match(body, '"accepted":(%%d+),"duplicates":(%%d+)')
  a, d = tonumber(a), tonumber(d)
  if a == nil then bad = bad + 1; return end
  accepted = accepted + a; duplicates = duplicates + d
  if not string.find(body, '"rejected":[]', 1, true) then rejected = rejected + 1 end
  local want = batch == 0 and 1 or batch - dups
  if a ~= want or d ~= (batch == 0 and 0 or dups) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local t = {accepted=0, duplicates=0, rejected=0, bad=0, non2xx=0}
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  io.write(string.format('RESULT {"requests": %%d, "seconds": %%f, "errors": %%d, ' ..
    '"accepted": %%d, "duplicates": %%d, "rejected_responses": %%d, "unexpected": %%d, ' ..
    '"non2xx": %%d, "p50_ms": %%f, "p90_ms": %%f, "p99_ms": %%f, "max_ms": %%f}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    t.accepted, t.duplicates, t.rejected, t.bad, t.non2xx,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


# `--trace-usage`: worker A is started through this wrapper, which times each usage read a
# metered check waits for (a miss of UsageCache.get) and how many reads of the same customer
# were in flight at once, one JSON line each. It patches the running process only.
TRACE_WRAPPER = """
import json, sys, time
from allotment.check import meter_use as usage
log = open(sys.argv.pop(1), "a", buffering=1)
original, in_flight = usage.UsageCache.get, {}
async def get(self, snapshot, now):
    found = self._entries.get(snapshot.customer)
    if (found is not None and time.monotonic() - found[0] < self.refresh_s
            and found[1] == usage.hour_of(now)):
        return found[2]
    key = snapshot.customer
    in_flight[key] = in_flight.get(key, 0) + 1
    same, started = in_flight[key], time.perf_counter()
    try:
        return await original(self, snapshot, now)
    finally:
        in_flight[key] -= 1
        log.write(json.dumps([time.time(), (time.perf_counter() - started) * 1000, same]) + "\\n")
usage.UsageCache.get = get
import uvicorn
sys.argv[0] = "uvicorn"
uvicorn.main()
"""


def serve_traced(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", TRACE_WRAPPER, str(log), "allotment.app:create_app", "--factory",
         *SERVER_FLAGS, "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def usage_reads(log: Path, start: float, end: float) -> dict[str, float]:
    """The traced usage reads between two moments (time.time())."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line]
    rows = [r for r in rows if start <= r[0] <= end]
    if not rows:
        return {"reads_per_s": 0.0}
    waits = sorted(r[1] for r in rows)
    same = [r[2] for r in rows]
    return {
        "reads_per_s": len(rows) / (end - start),
        "wait_p50_ms": pct(waits, 0.5),
        "wait_p90_ms": pct(waits, 0.9),
        "wait_p99_ms": pct(waits, 0.99),
        "wait_max_ms": waits[-1],
        "same_customer_in_flight_mean": statistics.mean(same),
        "same_customer_in_flight_max": max(same),
    }


# -- processes, wrk and the service's own counts ----------------------------------------------


def wrk(url: str, script: Path, *, duration: int, connections: int) -> dict[str, Any]:
    """wrk's RESULT line, and the CPU wrk itself used (its share of one core)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency",
         "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / result["seconds"]
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["wrk_cpu"] = used / wall
    return result


class Probe:
    """Between start() and stop(): the CPU (share of one core) of the server under test and
    of PostgreSQL (its processes listed at both ends: backends come and go), how busy the
    machine was, and the transactions PostgreSQL committed per second in the database."""

    def __init__(self, data_dir: Path | None, database_url: str) -> None:
        self.data_dir, self.url = data_dir, database_url

    def _postgres(self) -> dict[int, float]:
        if self.data_dir is None:
            return {}
        return {p.pid: cpu_seconds([p]) for p in postgres_processes(self.data_dir)}

    def _counts(self) -> tuple[int, int, int]:
        """Transactions and sessions (connections opened) in the database; scans of
        usage_counters (a metered check's usage read is one index scan; ingestion's upserts
        one per counter row)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "        WHERE datname = current_database()), "
                "       (SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) "
                "        FROM pg_stat_user_tables WHERE relname = 'usage_counters'), "
                "       (SELECT sessions FROM pg_stat_database WHERE datname = current_database())"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def start(self, server: psutil.Process) -> None:
        self.server = server
        self.busy_before = psutil.cpu_percent(interval=1.0) / 100  # anything else running?
        self.x0, self.u0, self.c0 = self._counts()
        psutil.cpu_percent()
        self.s0, self.p0 = cpu_seconds([server]), self._postgres()
        self.t0, self.wall_start = time.perf_counter(), time.time()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        self.wall_end = time.time()
        server, postgres = cpu_seconds([self.server]), self._postgres()
        busy = psutil.cpu_percent() / 100
        time.sleep(1.5)  # backends report their statistics at most once a second
        xacts, scans, sessions = self._counts()
        return {
            "server_cpu": (server - self.s0) / wall,
            "postgres_cpu": sum(cpu - self.p0.get(pid, 0.0) for pid, cpu in postgres.items())
            / wall,
            "machine_busy": busy,
            "machine_busy_before": self.busy_before,
            "pg_xacts_per_s": (xacts - self.x0) / wall,
            "usage_counter_scans_per_s": (scans - self.u0) / wall,
            "pg_connections_opened": sessions - self.c0 - 1,  # less this probe's own
        }


class WaitSampler(threading.Thread):
    """What the service's PostgreSQL connections do, every 20 ms: average connections per
    state (running, waiting for a lock and on what, WAL flush at commit, idle in a
    transaction = waiting for the worker)."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.url = database_url
        self.halt = threading.Event()
        self.states: Counter[str] = Counter()
        self.samples = 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.halt.wait(0.02):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                ).fetchall()
                self.samples += 1
                for state, wait_type, wait, query in rows:
                    self.states[self.classify(state, wait_type, wait, query)] += 1

    @staticmethod
    def classify(state: str, wait_type: str | None, wait: str | None, query: str) -> str:
        statement = " ".join((query or "").split())
        table = re.search(r"INSERT INTO (\w+)", statement)
        what = table.group(1) if table else statement[:40]
        if state == "idle":
            return "idle in the pool"
        if state == "idle in transaction":
            return "idle in transaction (waiting for the worker)"
        if wait_type == "Lock":
            return f"waiting for a lock ({wait}) in {what}"
        if wait_type is None or wait_type == "ClientRead":
            return f"running: {what}"
        return f"waiting {wait_type}/{wait}: {what}"

    def summary(self) -> dict[str, float]:
        n = max(self.samples, 1)
        return {state: round(count / n, 2) for state, count in self.states.most_common()}


# -- seeding ----------------------------------------------------------------------------------


def event(source: str, event_id: str, n: int, customers: list[str], at: str) -> dict[str, Any]:
    """The same event the Lua script makes for `n` (pool events are sent from here)."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": EVENT_TYPE,
        "subject": customers[n % len(customers)],
        "time": at,
        "data": {"count": n % 3 + 1},
    }


async def seed(base: str, admin: str, customers: list[str], lagging: list[str]) -> None:
    headers = {"Authorization": f"Bearer {admin}"}
    starts_at = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        created = await client.post(
            "/v1/policies", content=demo_policy(), headers={"Content-Type": "application/yaml"}
        )
        created.raise_for_status()
        version = created.json()["version"]
        (await client.post(f"/v1/policies/{version}/publish")).raise_for_status()
        semaphore = asyncio.Semaphore(8)

        async def one(customer: str, overrides: list[dict[str, Any]]) -> None:
            async with semaphore:
                r = await client.post("/v1/customers", json={"key": customer, "name": customer})
                r.raise_for_status()
                r = await client.post(
                    f"/v1/customers/{customer}/contracts",
                    json={"plan": PLAN, "starts_at": starts_at, "overrides": overrides},
                )
                r.raise_for_status()

        limited = [{"meter": METER, "limit": LAG_LIMIT, "reason": "bench"}]
        await asyncio.gather(*(one(c, []) for c in customers), *(one(c, limited) for c in lagging))


async def send_pool(
    base: str, key: str, *, source: str, pool: str, size: int, customers: list[str], at: str
) -> int:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": BATCH_MEDIA}
    accepted = 0
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        for start in range(0, size, 500):
            body = [
                event(source, f"{pool}-{k}", k, customers, at)
                for k in range(start, min(size, start + 500))
            ]
            r = await client.post("/v1/events", content=json.dumps(body))
            r.raise_for_status()
            answer = r.json()
            if answer["rejected"]:
                raise RuntimeError(f"pool events rejected: {answer['rejected'][:3]}")
            accepted += answer["accepted"]
    return accepted


async def warm_checks(base: str, key: str, customers: list[str]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        for customer in customers:
            for feature in (METERED_FEATURE, PLAIN_FEATURE):
                r = await client.post("/v1/check", json={"customer": customer, "feature": feature})
                r.raise_for_status()
                if not r.json()["allowed"]:
                    raise RuntimeError(f"warm check denied: {r.text}")


# -- the lag across workers -------------------------------------------------------------------


async def lag(
    a: str, b: str, key: str, customers: list[str], *, source: str, at: str
) -> dict[str, Any]:
    """Per customer: poll worker B until it denies, while one event over the limit goes to A."""
    headers = {"Authorization": f"Bearer {key}"}
    after_ack: list[float] = []
    after_send: list[float] = []
    polls: list[int] = []
    a_denied_at_once = 0
    async with (
        httpx.AsyncClient(base_url=a, headers=headers, timeout=30) as client_a,
        httpx.AsyncClient(base_url=b, headers=headers, timeout=30) as client_b,
    ):
        for i, customer in enumerate(customers):
            body = {"customer": customer, "feature": METERED_FEATURE}
            sent = asyncio.Event()
            count = 0

            async def poll(body: dict[str, Any] = body, sent: asyncio.Event = sent) -> float:
                nonlocal count
                while True:
                    r = await client_b.post("/v1/check", json=body)
                    seen = time.perf_counter()
                    answer = r.json()
                    count += 1
                    if not answer["allowed"]:
                        if not sent.is_set() or answer["reason"] != "usage_limit_reached":
                            raise RuntimeError(f"worker B denied before the event: {answer}")
                        return seen

            poller = asyncio.create_task(poll())
            # B's cache holds an entry (used 0) refreshed at a random phase of its interval.
            await asyncio.sleep(random.uniform(0.3, 0.6))
            if poller.done():
                poller.result()
            sent.set()
            started = time.perf_counter()
            r = await client_a.post(
                "/v1/events",
                json={**event(source, f"lag-{i}", 0, [customer], at), "data": {"count": 11}},
                headers={"Content-Type": SINGLE_MEDIA},
            )
            acked = time.perf_counter()
            if r.status_code != 200 or r.json()["accepted"] != 1:
                raise RuntimeError(f"lag event not accepted: {r.status_code} {r.text}")
            own = (await client_a.post("/v1/check", json=body)).json()
            a_denied_at_once += own["reason"] == "usage_limit_reached"
            seen = await poller
            after_ack.append((seen - acked) * 1000)
            after_send.append((seen - started) * 1000)
            polls.append(count)
    return {
        "rounds": len(after_ack),
        "after_ack_ms": {
            "p50": statistics.median(after_ack),
            "p90": pct(after_ack, 0.9),
            "max": max(after_ack),
            "min": min(after_ack),
        },
        "after_send_ms": {"p50": statistics.median(after_send), "max": max(after_send)},
        "worker_a_denied_at_once": a_denied_at_once,
        "polls_per_round": statistics.median(polls),
    }


# -- exactness --------------------------------------------------------------------------------


def verify(database_url: str, sources: list[str], customers: list[str]) -> dict[str, Any]:
    """Ids, events and counters of the bench's sources and customers, from SQL."""
    with psycopg.connect(database_url) as conn:
        ids: dict[str, int] = dict(
            conn.execute(
                "SELECT source, count(*) FROM usage_event_ids WHERE source = ANY(%s) "
                "GROUP BY source",
                (sources,),
            ).fetchall()
        )
        events = conn.execute(
            "SELECT count(*), coalesce(sum((e.data->>'count')::numeric), 0), "
            "count(*) FILTER (WHERE (e.data->>'count')::int <> "
            "  (split_part(e.id, '-', array_length(string_to_array(e.id, '-'), 1))::bigint "
            "   %% 3 + 1)) "
            "FROM usage_events e JOIN customers c ON c.id = e.customer_id "
            "WHERE c.key = ANY(%s) AND e.type = %s",
            (customers, EVENT_TYPE),
        ).fetchone()
        counters = conn.execute(
            "SELECT coalesce(sum(u.value), 0), coalesce(sum(u.events), 0) "
            "FROM usage_counters u JOIN customers c ON c.id = u.customer_id "
            "WHERE c.key = ANY(%s) AND u.meter = %s",
            (customers, METER),
        ).fetchone()
        orphans = conn.execute(
            "SELECT count(*) FROM usage_event_ids i WHERE i.source = ANY(%s) AND NOT EXISTS "
            "(SELECT 1 FROM usage_events e WHERE e.source = i.source AND e.id = i.id)",
            (sources,),
        ).fetchone()
    assert events is not None and counters is not None and orphans is not None
    return {
        "ids_by_source": ids,
        "events": events[0],
        "events_count_sum": int(events[1]),
        "events_count_not_from_id": events[2],
        "counter_value": int(counters[0]),
        "counter_events": int(counters[1]),
        "ids_without_event": orphans[0],
    }


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8, help="for the event runs")
    parser.add_argument(
        "--check-connections", type=int, default=32, help="for the check runs (as bench/run.py)"
    )
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dup-share", type=float, default=0.1)
    parser.add_argument("--pool", type=int, default=20_000, help="events accepted before the run")
    parser.add_argument("--lag-rounds", type=int, default=20)
    parser.add_argument(
        "--trace-usage",
        action="store_true",
        help="time the usage reads metered checks wait for (worker A instrumented)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy worker A and sample PostgreSQL's wait events during each of its runs",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    spy_bin = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if args.profile and spy_bin is None:
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    dups = round(args.batch * args.dup_share)

    settings = Settings(
        database_url=os.environ.get("ALLOTMENT_DATABASE_URL") or None,
        redis_url=os.environ.get("ALLOTMENT_REDIS_URL") or None,
        data_dir=DATA_DIR,
    )
    load_before = os.getloadavg()
    servers = embedded.start(settings)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        database_url = fresh_database(servers, DATABASE)
        upgrade(database_url)
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-events-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        admin, check = mint_key(env, "admin"), mint_key(env, "check")
        port, bare_port, port_b = free_port(), free_port(), free_port()
        trace = Path(tempfile.mkdtemp(prefix="allotment-bench-events-")) / "usage-reads.jsonl"
        if args.trace_usage:
            procs.append(serve_traced(port, env, trace))
        else:
            procs.append(serve(["allotment.app:create_app", "--factory"], port, env))
        procs.append(serve(["bench.bare:app"], bare_port, env))
        worker = psutil.Process(procs[0].pid)
        base, bare = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
        customers = [f"ev{i:03d}" for i in range(args.customers)]
        lagging = [f"lag{i:02d}" for i in range(args.lag_rounds)]
        started = time.perf_counter()
        asyncio.run(seed(base, admin, customers, lagging))
        print(f"seeded {len(customers) + len(lagging)} customers in "
              f"{time.perf_counter() - started:.1f}s")  # fmt: skip

        tag = f"{int(time.time()) % 100000}"
        source, single_source, lag_source = "bench-batch", "bench-single", "bench-lag"
        at = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        pool = f"p{tag}"
        started = time.perf_counter()
        accepted_pool = asyncio.run(
            send_pool(base, check, source=source, pool=pool, size=args.pool,
                      customers=customers, at=at)
        )  # fmt: skip
        print(f"accepted a pool of {accepted_pool} events in {time.perf_counter() - started:.1f}s")
        asyncio.run(warm_checks(base, check, customers))

        workdir = Path(tempfile.mkdtemp(prefix="allotment-bench-events-"))
        probe = Probe(DATA_DIR if servers.started_any else None, database_url)
        quoted = ",".join(f'"{c}"' for c in customers)
        results: dict[str, Any] = {}
        profiles: dict[str, list[str]] = {}

        def measure(
            name: str, url: str, script: Path, server: psutil.Process, connections: int
        ) -> dict[str, Any]:
            """One wrk run, with CPU, PostgreSQL's transactions, and (--profile) py-spy of
            the server and PostgreSQL's wait states."""
            spy, sampler = None, None
            folded = workdir / f"{name}.folded"
            if args.profile and server.pid == worker.pid:
                spy = subprocess.Popen(
                    [str(spy_bin), "record", "-r", "100", "--nonblocking", "--function",
                     "-d", str(args.duration), "-f", "raw", "-o", str(folded),
                     "-p", str(server.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                sampler = WaitSampler(database_url)
                sampler.start()
            probe.start(server)
            result = wrk(url, script, duration=args.duration, connections=connections)
            result.update(probe.stop())
            if sampler is not None:
                sampler.halt.set()
                sampler.join(timeout=5)
                result["connections_by_state"] = sampler.summary()
            if spy is not None:
                spy.wait(timeout=60)
                if folded.exists():
                    keep = ROOT / "bench" / "results" / f"events-{tag}-{name}.folded"
                    keep.parent.mkdir(exist_ok=True)
                    shutil.copy(folded, keep)
                    profiles[name] = [
                        f"(raw: {keep.relative_to(ROOT)})",
                        *summarise_profile(folded, top=14),
                    ]
            results[name] = result
            return result

        def events_lua(name: str, *, run: str, src: str, batch: int, media: str) -> Path:
            path = workdir / f"{name}.lua"
            path.write_text(
                LUA
                % {
                    "customers": quoted, "run": run, "pool": pool, "source": src, "time": at,
                    "batch": batch, "dups": dups if batch else 0, "poolsize": args.pool,
                    "media": media, "key": check, "type": EVENT_TYPE,
                }
            )  # fmt: skip
            return path

        # 1. batches of --batch with 10 % duplicates
        script = events_lua("batch", run=f"b{tag}", src=source, batch=args.batch,
                            media=BATCH_MEDIA)  # fmt: skip
        before = settle(base, "/v1/events", "200")
        result = measure("batch", base, script, worker, args.connections)
        result["served_200"] = settle(base, "/v1/events", "200") - before
        result["events_per_s"] = result["accepted"] / result["seconds"]
        result["offered_per_s"] = result["requests"] * args.batch / result["seconds"]
        result["server_cpu_us_per_event"] = (
            result["server_cpu"] * result["seconds"] / max(result["accepted"], 1) * 1e6
        )

        # 2. single events
        script = events_lua("single", run=f"s{tag}", src=single_source, batch=0,
                            media=SINGLE_MEDIA)  # fmt: skip
        before = settle(base, "/v1/events", "200")
        result = measure("single", base, script, worker, args.connections)
        result["served_200"] = settle(base, "/v1/events", "200") - before
        result["events_per_s"] = result["accepted"] / result["seconds"]

        # 3. warm checks: bare, metered, plain (same wrk settings, one after the other)
        def check_lua(name: str, feature: str) -> Path:
            path = workdir / f"{name}.lua"
            path.write_text(
                CHECK_LUA
                % {"customers": quoted, "features": f'"{feature}"', "batch": 0, "key": check}
            )
            return path

        metered, plain = check_lua("metered", METERED_FEATURE), check_lua("plain", PLAIN_FEATURE)
        # The event runs made the worker forget every customer's usage: read it once again.
        asyncio.run(warm_checks(base, check, customers))
        bare_proc = psutil.Process(procs[1].pid)
        for name, url, script, server in (
            ("bare_check", bare, metered, bare_proc),
            ("metered_check", base, metered, worker),
            ("plain_check", base, plain, worker),
        ):
            result = measure(name, url + "/v1/check", script, server, args.check_connections)
            if args.trace_usage and server.pid == worker.pid:
                result["usage_reads"] = usage_reads(trace, probe.wall_start, probe.wall_end)

        # exactness, before the lag test adds its own events (to other customers)
        time.sleep(0.5)
        db = verify(database_url, [source, single_source], customers)
        acked = (
            accepted_pool
            + results["batch"]["served_200"] * (args.batch - dups)
            + results["single"]["served_200"]
        )
        ids = sum(db["ids_by_source"].values())
        read = accepted_pool + results["batch"]["accepted"] + results["single"]["accepted"]
        unexpected = (
            results["batch"]["unexpected"]
            + results["batch"]["rejected_responses"]
            + results["single"]["unexpected"]
        )
        exact = {
            "ids == events rows": ids == db["events"] and db["ids_without_event"] == 0,
            "ids == acknowledged (served 200s x accepted each)": ids == acked,
            "wrk-read accepted <= ids": read <= ids,
            "every response read said accepted = new, duplicates = dups": unexpected == 0,
            "counter value == sum of accepted counts": db["counter_value"]
            == db["events_count_sum"],
            "counter events == accepted events": db["counter_events"] == db["events"],
            "stored counts == counts the ids imply": db["events_count_not_from_id"] == 0,
        }

        # 4. lag across workers
        procs.append(serve(["allotment.app:create_app", "--factory"], port_b, env))
        lag_result = asyncio.run(
            lag(base, f"http://127.0.0.1:{port_b}", check, lagging, source=lag_source, at=at)
        )

        load_after = os.getloadavg()
        print(
            f"\n{os.cpu_count()} cores; load average {load_before[0]:.2f} before, "
            f"{load_after[0]:.2f} after; one worker each, {' '.join(SERVER_FLAGS)}"
        )
        b = results["batch"]
        print(
            f"\nPOST /v1/events, batches of {args.batch} ({dups} duplicates of accepted events "
            f"each), wrk -c{args.connections} -d{args.duration}s:\n"
            f"  {b['events_per_s']:,.0f} accepted events/s ({b['offered_per_s']:,.0f} offered), "
            f"{b['rps']:.1f} batches/s, p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms "
            f"per batch; errors {b['errors']}, non-2xx {b['non2xx']}, "
            f"unexpected answers {b['unexpected']}\n"
            f"  worker CPU {b['server_cpu_us_per_event']:.1f} us per accepted event "
            f"(= {1e6 / max(b['server_cpu_us_per_event'], 1e-9):,.0f} events per CPU-second)"
        )
        s = results["single"]
        print(
            f"POST /v1/events, one event per request, wrk -c{args.connections}:\n"
            f"  {s['events_per_s']:,.0f} events/s, p50 {s['p50_ms']:.2f} ms, "
            f"p99 {s['p99_ms']:.2f} ms; errors {s['errors']}, non-2xx {s['non2xx']}"
        )
        print(f"warm POST /v1/check, wrk -c{args.check_connections} -d{args.duration}s:")
        for name in ("bare_check", "metered_check", "plain_check"):
            r = results[name]
            print(
                f"  {name:14s} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors'] + r['non2xx']}"
            )

        def per_cpu(name: str) -> float:
            return float(results[name]["rps"] / max(results[name]["server_cpu"], 1e-9))

        ratios = {
            "metered_vs_bare": results["metered_check"]["rps"] / results["bare_check"]["rps"],
            "plain_vs_bare": results["plain_check"]["rps"] / results["bare_check"]["rps"],
            "metered_p99_vs_bare": results["metered_check"]["p99_ms"]
            / results["bare_check"]["p99_ms"],
            # per CPU-second of the server: less sensitive to other processes on the machine
            "metered_vs_bare_per_cpu": per_cpu("metered_check") / per_cpu("bare_check"),
            "plain_vs_bare_per_cpu": per_cpu("plain_check") / per_cpu("bare_check"),
        }
        for name, value in ratios.items():
            print(f"  {name:26s} {value:5.2f}")
        after_ack = lag_result["after_ack_ms"]
        print(
            f"\nlag, event to worker A -> worker B denies ({lag_result['rounds']} rounds, "
            f"limit {LAG_LIMIT}): p50 {after_ack['p50']:.0f} ms, p90 {after_ack['p90']:.0f} ms, "
            f"max {after_ack['max']:.0f} ms after A's answer (from the send: p50 "
            f"{lag_result['after_send_ms']['p50']:.0f}, max "
            f"{lag_result['after_send_ms']['max']:.0f}); worker A denied at once in "
            f"{lag_result['worker_a_denied_at_once']}/{lag_result['rounds']}"
        )
        print(
            f"\nexactness: ids {db['ids_by_source']} = {db['events']} event rows; acknowledged "
            f"{acked} (pool {accepted_pool} + {results['batch']['served_200']} batches x "
            f"{args.batch - dups} + {results['single']['served_200']} singles); wrk read "
            f"{results['batch']['accepted']} + {results['single']['accepted']}; counters "
            f"{db['counter_value']} (events {db['counter_events']}) vs sum of counts "
            f"{db['events_count_sum']}"
        )
        for name, ok in exact.items():
            print(f"  {'OK      ' if ok else 'MISMATCH'} {name}")
        print("\nCPU (share of one core) and PostgreSQL transactions per run:")
        for name, r in results.items():
            print(
                f"  {name:14s} server {r['server_cpu']:4.0%}, PostgreSQL {r['postgres_cpu']:4.0%}"
                f", wrk {r['wrk_cpu']:4.0%}; machine {r['machine_busy']:4.0%} busy "
                f"({r['machine_busy_before']:.0%} the second before); "
                f"{r['pg_xacts_per_s']:,.0f} transactions/s "
                f"({r['pg_xacts_per_s'] / max(r['rps'], 1e-9):.2f} per request), "
                f"{r['usage_counter_scans_per_s']:,.0f} scans of usage_counters/s, "
                f"{r['pg_connections_opened']} connections opened"
            )
        for name, r in results.items():
            reads = r.get("usage_reads")
            if reads and reads["reads_per_s"]:
                print(
                    f"\nusage reads during {name} (--trace-usage): {reads['reads_per_s']:.0f}/s "
                    f"(one per customer per refresh would be at most "
                    f"{args.customers / settings.usage_refresh_s:.0f}/s), the check waits "
                    f"p50 {reads['wait_p50_ms']:.1f} ms, p90 {reads['wait_p90_ms']:.1f} ms, "
                    f"p99 {reads['wait_p99_ms']:.1f} ms, max {reads['wait_max_ms']:.0f} ms; "
                    f"reads of the same customer in flight at once: mean "
                    f"{reads['same_customer_in_flight_mean']:.2f}, max "
                    f"{reads['same_customer_in_flight_max']}"
                )
        for name, r in results.items():
            if "connections_by_state" in r:
                print(f"\nPostgreSQL connections during {name} (average number per state):")
                for state, avg in r["connections_by_state"].items():
                    print(f"  {avg:5.2f}  {state}")
        for name, lines in profiles.items():
            print(f"\npy-spy of the worker during {name}:")
            print("\n".join(lines))
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        report = {
            "at": datetime.now(UTC).isoformat(),
            "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
            "load_average": {"before": load_before, "after": load_after},
            "settings": {**vars(args), "dups": dups, "server": " ".join(SERVER_FLAGS)},
            "results": results,
            "ratios": ratios,
            "lag": lag_result,
            "exactness": {"db": db, "acknowledged": acked, "checks": exact},
            "profiles": profiles,
        }
        (out_dir / f"events-{int(time.time())}.json").write_text(
            json.dumps(report, indent=2, default=str)
        )
        if not all(exact.values()):
            sys.exit("inexact totals: see the exactness lines above")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        servers.stop()


if __name__ == "__main__":
    main()
