"""Seat assignments per second on one worker: spread over many customers, and all on one.

    .venv/bin/python bench/seats.py [--duration 10] [--connections 32] [--customers 50]
                                    [--big-pool 0] [--keyed] [--repeat 1] [--profile]

Starts a fresh database (embedded by default, or ALLOTMENT_DATABASE_URL's server; its own
data dir and database, so it collides with neither the tests nor bench/run.py), publishes
the demo policy, creates customers on plan `team` with contracts of 1,000,000 seats (so no
pool fills) through the API, serves Allotment with bench/run.py's uvicorn flags (one
worker), and drives `POST /v1/customers/{key}/seats` with `wrk`, every request a new
subject:

    reference  the same requests to bench/durable.py, served beside it with the same flags:
             one durable single-row INSERT per request into the same PostgreSQL through the
             same kind of pool (the most one durable write per request can do here)
    spread   each request for a random one of --customers customers
    single   every request for one customer: all of them queue on its row (the pool lock)
    big      (--big-pool N) one customer already holding N live seats
    keyed    (--keyed) spread and one customer again, every request with its own
             Idempotency-Key: the key claimed in the assigning statement, the response
             stored with the effect before COMMIT

Prints assignments/s (201s as wrk saw them, per second) and each run's ratio to the
reference of its round, p50/p99 and the non-2xx count of each, the CPU the worker and
PostgreSQL used and the WAL written per committed write, and then checks in the database
that the live seats of each run equal the 201s the service sent (its own request metric),
that no subject holds two live seats, and that each seat has its audit record. wrk stops
with requests in flight whose responses it never reads: those are committed but not among
wrk's 201s, so live seats may exceed wrk's count by at most --connections. `--profile`
samples the worker with py-spy (where its CPU goes) and PostgreSQL's pg_stat_activity (what
the connections wait for) during each run. `--repeat N` interleaves N rounds (reference
first in each) and reports the median round. A benchmark, not a test: timings are reported,
not asserted; only lost or duplicate writes make it exit non-zero. Results:
bench/results/seats-<time>.json. Needs `wrk` (apt-get install wrk); --profile needs py-spy
(.venv/bin/pip install py-spy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
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
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allotment import embedded  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from allotment.policy import demo_policy  # noqa: E402
from bench import durable  # noqa: E402
from bench.run import BIN, ROOT, SERVER_FLAGS, free_port, fresh_database, serve  # noqa: E402

PLAN = "team"
SEAT_LIMIT = 1_000_000
ROUTE = "/v1/customers/{key}/seats"
DATA_DIR = Path(tempfile.gettempdir()) / "allotment-bench-seats"
DATABASE = "allotment_bench_seats"

# Every request a new subject: "<run>-<wrk thread>-<counter>". 201s, 200s (the subject
# already held a seat: never, here) and anything else are counted per thread by response()
# and summed in done().
LUA = """
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
local customers = {%(customers)s}
local run = "%(run)s"
local hdrs = {["Content-Type"]="application/json", ["Authorization"]="Bearer %(key)s"}
function init(args)
  n, created, existed, failed = 0, 0, 0, 0
  math.randomseed(os.time() * 100 + tid)
end
local keyed = %(keyed)s
function request()
  n = n + 1
  local c = customers[math.random(#customers)]
  local subject = run .. '-' .. tid .. '-' .. n
  local body = '{"subject":"' .. subject .. '","type":"member"}'
  if keyed then hdrs["Idempotency-Key"] = subject end
  return wrk.format("POST", "/v1/customers/" .. c .. "/seats", hdrs, body)
end
function response(status, headers, body)
  if status == 201 then created = created + 1
  elseif status == 200 then existed = existed + 1
  else failed = failed + 1 end
end
function done(summary, latency, requests)
  local c, e, f = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created"); e = e + t:get("existed"); f = f + t:get("failed")
  end
  io.write(string.format('RESULT {"requests": %%d, "seconds": %%f, "errors": %%d, ' ..
    '"created": %%d, "existed": %%d, "non2xx": %%d, ' ..
    '"p50_ms": %%f, "p90_ms": %%f, "p99_ms": %%f, "max_ms": %%f}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    c, e, f, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def mint_key(env: dict[str, str], scope: str) -> str:
    out = subprocess.run(
        [str(BIN / "allotment"), "api-keys", "create", "--name", f"bench-{scope}",
         "--scope", scope],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1]


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
                    json={"plan": PLAN, "starts_at": starts_at, "seats": {"limit": SEAT_LIMIT}},
                )
                r.raise_for_status()

        await asyncio.gather(*(one(c) for c in customers))


def prefill(database_url: str, customer: str, n: int) -> None:
    """Give `customer` n live seats directly in SQL (what a large tenant looks like)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO seats (id, customer_id, subject, type, over_limit, assigned_at) "
            "SELECT 'seat_prefill_' || g, c.id, 'prefill-' || g, 'member', false, now() "
            "FROM customers c, generate_series(1, %s) g WHERE c.key = %s",
            (n, customer),
        )
        # As after any bulk load: the insert left 20,000 dead versions of the customer's
        # seat_counts row (its trigger ran per seat), which would otherwise slow every
        # reader of that small table until autovacuum came by.
        conn.execute("VACUUM ANALYZE seats")
        conn.execute("VACUUM ANALYZE seat_counts")


def lua(path: Path, *, customers: list[str], key: str, run: str, keyed: bool = False) -> Path:
    path.write_text(
        LUA
        % {
            "customers": ",".join(f'"{c}"' for c in customers),
            "key": key,
            "run": run,
            "keyed": "true" if keyed else "false",
        }
    )
    return path


def wrk(url: str, script: Path, *, duration: int, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s",
         "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["assignments_per_s"] = result["created"] / result["seconds"]
    return result


def served(base: str, route: str, status: str, method: str = "POST") -> int:
    """The service's own count of `status` answers on `route` (its request histogram)."""
    text = httpx.get(base + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name != "allotment_request_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_count")
                and labels.get("method") == method
                and labels.get("route") == route
                and labels.get("status") == status
            ):
                return int(sample.value)
    return 0


def settle(base: str, route: str, status: str) -> int:
    """Wait for the requests still in flight when wrk stopped; the final count of `status`."""
    last = served(base, route, status)
    while True:
        time.sleep(0.5)
        now = served(base, route, status)
        if now == last:
            return now
        last = now


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    pid_file = data_dir / "pg" / "postmaster.pid"
    if not pid_file.exists():  # an external server: not ours to measure
        return []
    postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(cpu_by_pid(processes).values())


def cpu_by_pid(processes: list[psutil.Process]) -> dict[int, float]:
    found = {}
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        found[proc.pid] = times.user + times.system
    return found


def postgres_cpu_since(before: dict[int, float]) -> float:
    """CPU seconds PostgreSQL's processes used since `before` (cpu_by_pid), counting the
    backends that started meanwhile (the pool opens connections under load) in full."""
    after = cpu_by_pid(postgres_processes(DATA_DIR))
    return sum(total - before.get(pid, 0.0) for pid, total in after.items())


def verify(database_url: str, run: str, customers: list[str]) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        counts = conn.execute(
            "SELECT count(*) FILTER (WHERE s.released_at IS NULL), count(*), "
            "count(DISTINCT (s.customer_id, s.subject)) "
            "FROM seats s JOIN customers c ON c.id = s.customer_id "
            "WHERE c.key = ANY(%s) AND s.subject LIKE %s",
            (customers, f"{run}-%"),
        ).fetchone()
        audit = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'seat.assigned' AND target_key LIKE %s",
            (f"%/{run}-%",),
        ).fetchone()
    assert counts is not None and audit is not None  # aggregates always return a row
    live, rows, distinct = counts
    return {"live": live, "duplicates": rows - distinct, "audited": audit[0]}


def summarise_profile(folded: Path, top: int = 12) -> list[str]:
    """Self time by library and by function, and the inclusive time of the project's own
    functions, from py-spy's raw (folded) output. SQLAlchemy's async layer runs its own
    (synchronous) part of each statement in a greenlet whose stack py-spy shows detached from
    the coroutine that awaits it, so a function's inclusive time here leaves that part out;
    the driver's I/O runs in the coroutine and is included. Time in a socket send includes
    the kernel waking PostgreSQL (or Redis) on the same core."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    total = 0
    frame_re = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")

    def library(path: str) -> str:
        parts = path.split("/")
        if parts[0] == "allotment" and len(parts) > 2:
            return "allotment." + parts[1]
        return parts[0].removesuffix(".py") or "?"

    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for frame in stack.split(";"):
            match = frame_re.match(frame)
            name, path = (match.group(1), match.group(2)) if match else (frame, "")
            frames.append((f"{name} ({path})" if path else name, path))
        own[frames[-1][0]] += count
        libraries[library(frames[-1][1])] += count
        for name in {name for name, path in frames if path.startswith("allotment/")}:
            inclusive[name] += count
    if not total:
        return ["(no samples)"]
    out = [f"{total} samples of the worker's CPU (idle waits are not sampled)"]
    out.append("self time by library:")
    out += [f"  {n / total:6.1%}  {name}" for name, n in libraries.most_common(top)]
    out.append("self time by function:")
    out += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    out.append("the project's functions, inclusive (less SQLAlchemy's greenlet part):")
    out += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return out


class WaitSampler(threading.Thread):
    """Samples what the service's PostgreSQL connections are doing, every 20 ms: running a
    statement, waiting for a lock (and on which statement), flushing WAL at commit, or idle
    in a transaction (waiting for the worker's next statement)."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.url = database_url
        self.stop = threading.Event()
        self.states: Counter[str] = Counter()
        self.samples = 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.wait(0.02):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' AND application_name = ''"
                ).fetchall()
                self.samples += 1
                for state, wait_type, wait, query in rows:
                    self.states[self.classify(state, wait_type, wait, query)] += 1

    @staticmethod
    def classify(state: str, wait_type: str | None, wait: str | None, query: str) -> str:
        statement = " ".join(query.split())
        if state == "idle":
            return "idle in the pool"
        if state == "idle in transaction":
            return "idle in transaction (waiting for the worker)"
        if wait_type == "Lock":
            if "FROM customers" in statement and "FOR UPDATE" in statement:
                what = "the customer row (pool lock)"
            elif "audit_head" in statement:
                what = "audit_head (audit chain lock)"
            elif statement.startswith("UPDATE customers"):
                what = "the customer row (state_version bump)"
            else:
                what = statement[:50]
            return f"waiting for {what}"
        if wait_type is None or wait_type == "ClientRead":  # ClientRead: mid-statement I/O
            return "running a statement"
        return f"waiting: {wait_type}/{wait}"

    def summary(self) -> dict[str, float]:
        """Average number of connections in each state over the run."""
        n = max(self.samples, 1)
        return {state: count / n for state, count in self.states.most_common()}


def machine_busy(seconds: float = 1.0) -> float:
    return psutil.cpu_percent(interval=seconds) / 100


def wal_snapshot(database_url: str) -> dict[str, float]:
    """PostgreSQL's cumulative WAL and commit counters (cluster-wide WAL, this database's
    commits), to divide a run's deltas by the writes it served."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        wal = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
        xact = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert wal is not None and xact is not None
    return {
        "wal_records": float(wal[0]),
        "wal_fpi": float(wal[1]),
        "wal_bytes": float(wal[2]),
        "commits": float(xact[0]),
    }


def verify_reference(database_url: str, run: str) -> int:
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            f"SELECT count(*) FROM {durable.TABLE} WHERE subject LIKE %s", (f"{run}-%",)
        ).fetchone()
    assert found is not None
    return int(found[0])


LABELS = {
    "reference": "reference: one durable INSERT per request (bench/durable.py)",
    "spread": "spread over {customers} customers",
    "single": "one customer",
    "big": "one customer holding {big_pool:,} seats",
    "keyed": "spread, each with its own Idempotency-Key",
    "keyed-one": "one customer, each with its own Idempotency-Key",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument(
        "--big-pool", type=int, default=0, help="also run one customer holding N live seats"
    )
    parser.add_argument(
        "--keyed",
        action="store_true",
        help="also run spread with its own Idempotency-Key on every request",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every run, interleaved (reference first in each); medians reported",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the worker and sample PostgreSQL's wait events during each run",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    spy_bin = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if args.profile and spy_bin is None:
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")

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
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(durable.CREATE)
            found = conn.execute("SHOW synchronous_commit").fetchone()
            synchronous_commit = found[0] if found else "?"
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-seats-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        admin, check = mint_key(env, "admin"), mint_key(env, "check")
        port, ref_port = free_port(), free_port()
        procs.append(serve(["allotment.app:create_app", "--factory"], port, env))
        procs.append(serve(["bench.durable:app"], ref_port, env))
        worker = psutil.Process(procs[0].pid)
        ref_worker = psutil.Process(procs[1].pid)
        base = f"http://127.0.0.1:{port}"
        ref_base = f"http://127.0.0.1:{ref_port}"
        spread = [f"sp{i:03d}" for i in range(args.customers)]
        started = time.perf_counter()
        asyncio.run(seed(base, admin, [*spread, "one", "big"]))
        print(f"seeded {len(spread) + 2} customers in {time.perf_counter() - started:.1f}s")
        if args.big_pool:
            prefill(database_url, "big", args.big_pool)
            print(f"customer 'big' holds {args.big_pool} live seats")

        workdir = Path(tempfile.mkdtemp(prefix="allotment-bench-seats-"))
        tag = f"{int(time.time()) % 100000}"
        kinds: list[tuple[str, list[str]]] = [
            ("reference", spread),
            ("spread", spread),
            ("single", ["one"]),
        ]
        if args.big_pool:
            kinds.append(("big", ["big"]))
        if args.keyed:
            kinds += [("keyed", spread), ("keyed-one", ["one"])]
        # Warm both servers (keys, catalog, connection pools) on subjects no run measures.
        warm = lua(workdir / "warm.lua", customers=spread, key=check, run=f"warm{tag}")
        wrk(base, warm, duration=2, connections=args.connections)
        wrk(ref_base, warm, duration=2, connections=args.connections)
        settle(base, ROUTE, "201")

        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in kinds}
        profiles: dict[str, list[str]] = {}
        for round_no in range(args.repeat):
            for name, customers in kinds:
                reference = name == "reference"
                run = f"{name}{tag}r{round_no}"
                script = lua(
                    workdir / f"{name}.lua", customers=customers, key=check, run=run,
                    keyed=name.startswith("keyed"),
                )  # fmt: skip
                server = ref_worker if reference else worker
                before = 0 if reference else settle(base, ROUTE, "201")
                busy_before = machine_busy()  # anything else competing for the cores?
                spy, sampler = None, None
                folded = workdir / f"{name}.folded"
                if args.profile and round_no == 0:
                    spy = subprocess.Popen(
                        [str(spy_bin), "record", "-r", "100", "--nonblocking", "--function",
                         "-d", str(args.duration), "-f", "raw", "-o", str(folded),
                         "-p", str(server.pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    sampler = WaitSampler(database_url)
                    sampler.start()
                wal_before = wal_snapshot(database_url)
                postgres = cpu_by_pid(postgres_processes(DATA_DIR)) if servers.started_any else {}
                cpu_before = (cpu_seconds([server]), time.perf_counter())
                sys_before = server.cpu_times().system
                psutil.cpu_percent()
                result = wrk(
                    ref_base if reference else base,
                    script,
                    duration=args.duration,
                    connections=args.connections,
                )
                result["machine_busy"] = psutil.cpu_percent() / 100
                wall = time.perf_counter() - cpu_before[1]
                server_cpu = cpu_seconds([server]) - cpu_before[0]
                result["worker_cpu"] = server_cpu / wall
                result["worker_system_share"] = (server.cpu_times().system - sys_before) / max(
                    server_cpu, 1e-9
                )
                postgres_cpu = postgres_cpu_since(postgres) if servers.started_any else 0.0
                result["postgres_cpu"] = postgres_cpu / wall
                result["machine_busy_before"] = busy_before
                if sampler is not None:
                    sampler.stop.set()
                    sampler.join(timeout=5)
                    result["connections_by_state"] = sampler.summary()
                if spy is not None:
                    spy.wait(timeout=60)
                    if folded.exists():
                        keep = ROOT / "bench" / "results" / f"seats-{tag}-{name}.folded"
                        keep.parent.mkdir(exist_ok=True)
                        shutil.copy(folded, keep)
                        profiles[name] = [
                            f"(raw: {keep.relative_to(ROOT)})",
                            *summarise_profile(folded),
                        ]
                if reference:
                    time.sleep(0.5)  # the responses wrk never read
                    written = verify_reference(database_url, run)
                    in_flight = written - result["created"]
                    result.update(served_201=written, in_flight_at_stop=in_flight)
                    result["ok"] = 0 <= in_flight <= args.connections and result["existed"] == 0
                    served_201s = written
                else:
                    served_201s = settle(base, ROUTE, "201") - before
                    check_db = verify(database_url, run, customers)
                    in_flight = check_db["live"] - result["created"]
                    result.update(served_201=served_201s, **check_db, in_flight_at_stop=in_flight)
                    result["ok"] = (
                        check_db["live"] == served_201s == check_db["audited"]
                        and check_db["duplicates"] == 0
                        and result["existed"] == 0
                        and 0 <= in_flight <= args.connections
                    )
                wal_after = wal_snapshot(database_url)
                n = max(served_201s, 1)
                # CPU and WAL per committed write (what the run served, not what wrk read).
                result["worker_cpu_ms_per_assignment"] = server_cpu / n * 1000
                result["postgres_cpu_ms_per_assignment"] = postgres_cpu / n * 1000
                for what in ("wal_records", "wal_fpi", "wal_bytes", "commits"):
                    result[f"{what}_per_write"] = (wal_after[what] - wal_before[what]) / n
                result["round"] = round_no
                rounds[name].append(result)

        results = {name: median_of(runs) for name, runs in rounds.items()}
        ref_rate = results["reference"]["assignments_per_s"]
        print(
            f"\nPOST {ROUTE}, one worker, wrk -t{min(2, args.connections)} "
            f"-c{args.connections} -d{args.duration}s, {os.cpu_count()} cores, "
            f"{args.repeat} round(s), synchronous_commit={synchronous_commit}"
        )
        pad = " " * 4
        for name, r in results.items():
            label = LABELS[name].format(customers=args.customers, big_pool=args.big_pool)
            each = rounds[name]
            rates = sorted(x["assignments_per_s"] for x in each)
            span = f" (rounds: {', '.join(f'{x:.0f}' for x in rates)})" if len(each) > 1 else ""
            per_round = [
                x["assignments_per_s"] / max(ref["assignments_per_s"], 1e-9)
                for x, ref in zip(each, rounds["reference"], strict=True)
            ]
            ratio = "" if name == "reference" else (
                f", {statistics.median(per_round):.2f} × the reference"
                + (f" ({min(per_round):.2f}–{max(per_round):.2f})" if len(each) > 1 else "")
            )  # fmt: skip
            r["reference_ratio"] = None if name == "reference" else statistics.median(per_round)
            print(
                f"{label}: {r['assignments_per_s']:.0f}/s{span}{ratio}; "
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                f"non-2xx {r['non2xx']}, socket errors {r['errors']}"
            )
            print(
                f"{pad}CPU per write: server {r['worker_cpu_ms_per_assignment']:.2f} ms "
                f"({r['worker_cpu']:.0%} of a core, {r['worker_system_share']:.0%} kernel), "
                f"PostgreSQL {r['postgres_cpu_ms_per_assignment']:.2f} ms "
                f"({r['postgres_cpu']:.0%}); machine {r['machine_busy']:.0%} busy "
                f"({r['machine_busy_before']:.0%} just before)"
            )
            print(
                f"{pad}WAL per write: {r['wal_records_per_write']:.1f} records, "
                f"{r['wal_bytes_per_write']:.0f} bytes, {r['wal_fpi_per_write']:.2f} full pages; "
                f"{r['commits_per_write']:.2f} commits"
            )
            for x in each:
                if name == "reference":
                    print(
                        f"{pad}check r{x['round']}: {x['served_201']} rows written; wrk read "
                        f"{x['created']} 201s -> {'OK' if x['ok'] else 'MISMATCH'}"
                    )
                    continue
                print(
                    f"{pad}check r{x['round']}: {x['live']} live seats = {x['served_201']} 201s "
                    f"served = {x['audited']} audit records; wrk read {x['created']} 201s "
                    f"({x['in_flight_at_stop']} in flight at stop); duplicates "
                    f"{x['duplicates']} -> {'OK' if x['ok'] else 'MISMATCH'}"
                )
            for state, avg in r.get("connections_by_state", {}).items():
                print(f"{pad}{avg:5.1f} connections {state}")
        spread_rate = results["spread"]["assignments_per_s"]
        target = max(0.5 * ref_rate, 1000.0 if ref_rate >= 2000 else 0.0)
        print(
            f"\ntarget: spread ≥ {target:.0f}/s (0.5 × the reference {ref_rate:.0f}/s"
            + (", and ≥ 1,000/s" if ref_rate >= 2000 else "")
            + f"): {'met' if spread_rate >= target else 'NOT met'} ({spread_rate:.0f}/s)"
        )
        for name, lines in profiles.items():
            label = LABELS[name].format(customers=args.customers, big_pool=args.big_pool)
            print(f"\npy-spy of the server, {label}:")
            print("\n".join(lines))
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        report = {
            "at": datetime.now(UTC).isoformat(),
            "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
            "settings": {
                "duration": args.duration,
                "connections": args.connections,
                "customers": args.customers,
                "big_pool": args.big_pool,
                "repeat": args.repeat,
                "server": " ".join(SERVER_FLAGS),
                "synchronous_commit": synchronous_commit,
            },
            "results": results,
            "rounds": rounds,
            "profiles": profiles,
        }
        (out_dir / f"seats-{int(time.time())}.json").write_text(json.dumps(report, indent=2))
        if not all(x["ok"] for each in rounds.values() for x in each):
            sys.exit("lost or duplicate writes: see the check lines above")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        servers.stop()


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median rate (its other figures with it)."""
    ordered = sorted(runs, key=lambda r: r["assignments_per_s"])
    return dict(ordered[(len(ordered) - 1) // 2])


if __name__ == "__main__":
    main()
