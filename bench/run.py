"""The decision-path benchmark: Allotment against the bare reference, side by side
(docs/design.md, "Targets").

    .venv/bin/python bench/run.py [--duration 10] [--connections 32] [--customers 1000]

Runs, side by side: `check` (boolean features, one at a time), `metered` (a metered feature
with use this month), `batch20` (20 boolean features), `mixed20` (20 features of every kind:
boolean, metered, seat-bound with and without the subject's seat, not in the plan, unknown;
duplicates as random picks make them), and the bare reference for one check and a batch.

Starts a fresh database (embedded by default, or ALLOTMENT_DATABASE_URL's server), seeds a
realistic catalog (50 features, 3 plans) and N customers with contracts through the API,
serves Allotment and `bench/bare.py` with the same uvicorn flags (one worker each, or
`--workers N`), warms
the cache, then drives both with the same `wrk` settings in the same run and prints
requests/s, p50 and p99 for each and the ratios. A benchmark, not a test: nothing here
passes or fails. Needs `wrk` (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from allotment import embedded  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.db import libpq_url  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402

BIN = Path(sys.executable).parent
SERVER_FLAGS = [
    "--host", "127.0.0.1", "--workers", "1", "--loop", "uvloop", "--http", "httptools",
    "--no-access-log", "--log-level", "warning",
]  # fmt: skip
FEATURES = [f"f{i:02d}" for i in range(50)]

LUA = """
local customers = {%(customers)s}
local features = {%(features)s}
local subjects = {%(subjects)s}
local batch = %(batch)s
local key = "%(key)s"
request = function()
  local c = customers[math.random(#customers)]
  local subject = ""
  if #subjects > 0 then
    subject = ',"subject":"' .. subjects[math.random(#subjects)] .. '"'
  end
  local body
  if batch > 0 then
    local picked = {}
    for i = 1, batch do picked[i] = '"' .. features[math.random(#features)] .. '"' end
    body = '{"customer":"' .. c .. '"' .. subject .. ',"features":[' ..
      table.concat(picked, ",") .. ']}'
  else
    body = '{"customer":"' .. c .. '"' .. subject .. ',"feature":"' ..
      features[math.random(#features)] .. '"}'
  end
  return wrk.format("POST", nil, {["Content-Type"]="application/json",
                                  ["Authorization"]="Bearer " .. key}, body)
end
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %%d, "seconds": %%f, "errors": %%d, ' ..
    '"non2xx": %%d, "p50_ms": %%f, "p99_ms": %%f}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


METERED = [f"m{i:02d}" for i in range(4)]  # metered: each reads the api_calls meter
SEATED = [f"s{i:02d}" for i in range(4)]  # seat-bound: u1 holds a seat, u2 does not
# The mixed batch: every kind of feature (boolean, metered, seat-bound, not in the plan for
# basic customers, unknown), picked at random, so duplicates and denials come as they do.
MIXED = [*FEATURES[15:25], *METERED, *SEATED, "f45", "nope"]


def bench_policy() -> dict[str, Any]:
    features: dict[str, Any] = {}
    for i, name in enumerate(FEATURES):
        spec: dict[str, Any] = {}
        if i % 10 == 9:
            spec["requires"] = [FEATURES[i - 1]]
        features[name] = spec
    features.update({name: {"meter": "api_calls"} for name in METERED})
    features.update({name: {"seat": "required"} for name in SEATED})
    limits = {"api_calls": {"limit": 1_000_000_000, "period": "month", "enforcement": "hard"}}
    return {
        "currency": "USD",
        "features": features,
        "meters": {"api_calls": {"event_type": "api.call", "aggregation": "sum", "property": "n"}},
        "plans": {
            "basic": {
                "features": [*FEATURES[:20], *METERED, *SEATED],
                "seats": {"limit": 5, "model": "named"},
                "limits": limits,
                "price": {"base": "100.00"},
            },
            "pro": {"extends": "basic", "features": [f"+{f}" for f in FEATURES[20:40]]},
            "max": {"extends": "pro", "features": [f"+{f}" for f in FEATURES[40:]]},
        },
        "rules": [{"feature": "f49", "when": "context.size() >= 0", "reason": "always_true"}],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_database(servers: embedded.Servers, name: str) -> str:
    base = make_url(libpq_url(servers.database_url))
    admin = base.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False)


# With --pin: the server under test (Allotment, then bare, one at a time) gets core 0 to
# itself; the load generator and PostgreSQL share the others. On 2 cores an unpinned run
# swings by ±30 % as the scheduler shares cores among wrk, the worker and the database.
SERVER_CORES: list[str] = []
LOAD_CORES: list[str] = []


def pin(cores: int) -> None:
    SERVER_CORES[:] = ["taskset", "-c", "0"]
    LOAD_CORES[:] = ["taskset", "-c", f"1-{cores - 1}"]


def pin_postgres(database_url: str) -> bool:
    """Move the PostgreSQL server (postmaster and backends) to the load cores, when it
    runs on this machine; its new backends inherit the postmaster's affinity."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        pid = int((Path(row[0]) / "postmaster.pid").read_text().split()[0])
    except (OSError, psycopg.Error, ValueError, IndexError, TypeError):
        return False
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    for each in [pid, *map(int, children.split())]:
        subprocess.run([*LOAD_CORES[:2], "-a", "-p", LOAD_CORES[2], str(each)],
                       capture_output=True, check=False)  # fmt: skip
    return True


def serve(args: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*SERVER_CORES, str(BIN / "uvicorn"), *args, *SERVER_FLAGS, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


async def seed(base: str, key: str, customers: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        created = await client.post("/v1/policies", json=bench_policy())
        created.raise_for_status()
        version = created.json()["version"]
        (await client.post(f"/v1/policies/{version}/publish")).raise_for_status()
        semaphore = asyncio.Semaphore(16)
        plans = ["basic", "pro", "max"]

        async def one(i: int) -> None:
            async with semaphore:
                key = f"c{i:04d}"
                r = await client.post("/v1/customers", json={"key": key, "name": key})
                r.raise_for_status()
                r = await client.post(
                    f"/v1/customers/{key}/contracts",
                    json={
                        "plan": plans[i % 3],
                        "kind": "standard",
                        "starts_at": "2026-01-01T00:00:00Z",
                    },
                )
                r.raise_for_status()
                r = await client.post(f"/v1/customers/{key}/seats", json={"subject": "u1"})
                r.raise_for_status()
                # Some use this month, so metered checks read real counters.
                events = [
                    {"specversion": "1.0", "id": f"{key}-{n}", "source": "bench",
                     "type": "api.call", "subject": key, "data": {"n": 1 + n}}
                    for n in range(5)
                ]  # fmt: skip
                r = await client.post(
                    "/v1/events",
                    json=events,
                    headers={"Content-Type": "application/cloudevents-batch+json"},
                )
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(customers)))


def cpu_ticks() -> dict[str, tuple[int, int]]:
    """Per core (`cpu0`, `cpu1`, …): (ticks stolen by the hypervisor, all ticks), from
    /proc/stat; empty where there is none."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(f) for f in fields[:8]]  # user … steal; guest time is inside user
            found[name] = (ticks[7], sum(ticks))
    return found


# A run during which the hypervisor took more than this share of any core from the machine
# was disturbed from outside: its figures say more about the neighbours than about the code.
STOLEN_PCT = 3.0


def stolen_pct(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> float:
    """The largest share of a core's time stolen between two `cpu_ticks()` readings."""
    shares = [
        100 * (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1])
        for c in after
        if c in before
    ]
    return max(shares, default=0.0)


def wrk(url: str, script: Path, *, duration: int, connections: int) -> dict[str, float]:
    ticks = cpu_ticks()
    out = subprocess.run(
        [
            *LOAD_CORES,
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / result["seconds"]
    result["stolen_pct"] = round(stolen_pct(ticks, cpu_ticks()), 1)
    return result


def lua(
    path: Path,
    *,
    customers: list[str],
    key: str,
    batch: int,
    features: list[str] = FEATURES,
    subjects: tuple[str, ...] = (),
) -> Path:
    path.write_text(
        LUA
        % {
            "customers": ",".join(f'"{c}"' for c in customers),
            "features": ",".join(f'"{f}"' for f in features),
            "subjects": ",".join(f'"{s}"' for s in subjects),
            "batch": batch,
            "key": key,
        }
    )
    return path


def cold_latencies(base: str, key: str, customers: list[str]) -> list[float]:
    """One connection, each request for a customer whose snapshot nothing has cached."""
    latencies = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        for customer in customers:
            started = time.perf_counter()
            client.post("/v1/check", json={"customer": customer, "feature": "f01"})
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def touch(base: str, key: str, customers: list[str], path: str, body: dict[str, Any]) -> None:
    """One request per customer (32 at a time), so the measured run starts warm: every
    snapshot cached and, for meters, every customer's use read and being refreshed."""
    headers = {"Authorization": f"Bearer {key}"}
    semaphore = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def one(customer: str) -> None:
            async with semaphore:
                (await client.post(path, json={**body, "customer": customer})).raise_for_status()

        await asyncio.gather(*(one(c) for c in customers))


def buckets(metrics: str) -> dict[tuple[str, str], dict[float, float]]:
    """The service's own time histograms: `allotment_check_seconds` per endpoint (deciding)
    and `allotment_request_seconds` per route (the whole request inside the service)."""
    found: dict[tuple[str, str], dict[float, float]] = {}
    for line in metrics.splitlines():
        name, _, rest = line.partition("_bucket{")
        if name not in (
            "allotment_check_seconds",
            "allotment_request_seconds",
            "allotment_gc_pause_seconds",
            "allotment_usage_read_seconds",
        ):
            continue
        labels, _, value = rest.partition("} ")
        parts = {k: v.strip('"') for k, v in (p.split("=", 1) for p in labels.split(","))}
        which = (
            parts.get("endpoint")
            or parts.get("route")
            or parts.get("generation")
            or f"{parts.get('kind')}/{parts.get('stage')}"
        )
        found.setdefault((name, which), {})[float(parts["le"])] = float(value)
    return found


COUNTED = ("allotment_snapshot_cache_total", "allotment_usage_reads_total",
           "allotment_decisions_dropped_total")  # fmt: skip


def counters(metrics: str) -> dict[str, float]:
    """The service's counters that explain a run: cache misses, usage reads, drops."""
    return {
        name: float(value)
        for line in metrics.splitlines()
        if line.startswith(COUNTED)
        for name, _, value in [line.rpartition(" ")]
    }


def server_time(
    before: dict[float, float], after: dict[float, float], prefix: str
) -> dict[str, float]:
    """Upper bounds of the p50 and p99 of a histogram's observations in a run."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts[float("inf")]
    bounds: dict[str, float] = {}
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        le = next((le for le, n in counts.items() if total and n >= q * total), float("nan"))
        bounds[f"{prefix}_{name}"] = le * 1000
    return bounds


def gc_pauses(
    before: dict[float, float], after: dict[float, float], prefix: str
) -> dict[str, float]:
    """How many collections of a generation ran in a run, and how many took over 10 ms."""
    if not after:
        return {}
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    quick = after[0.01] - before.get(0.01, 0.0)
    return {f"{prefix}_collections": total, f"{prefix}_over_10ms": total - quick}


def measure(
    plan: dict[str, tuple[str, str, Path, dict[str, Any]]],
    args: argparse.Namespace,
    base: str,
    key: str,
    customers: list[str],
    pid: int,
    run: dict[str, int],
) -> dict[str, dict[str, Any]]:
    """One round: each run of the plan after its warm-up, Allotment's beside bare's."""
    results: dict[str, dict[str, Any]] = {}
    for name, (server, path, script, body) in plan.items():
        url = server + path
        if args.only and name not in args.only and not name.startswith("bare"):
            continue
        # Warm: each customer once (a cold customer's first metered check reads its use,
        # measured above as the cold check), then unmeasured load for the steady state.
        if server == base:
            asyncio.run(touch(base, key, customers, path, body))
        if args.warmup:
            wrk(url, script, duration=args.warmup, connections=args.connections)
        endpoint = "batch" if path.endswith("/batch") else "check"
        route = "/v1/check/batch" if endpoint == "batch" else "/v1/check"
        scraped = httpx.get(base + "/metrics").text  # one scrape, read two ways
        before, counted = buckets(scraped), counters(scraped)
        # py-spy records the measured run only (not the touch and warm-up before it).
        spy = None
        if args.profile == name:
            spy = subprocess.Popen(
                [str(BIN / "py-spy"), "record", "-r", "200", "-d", str(args.duration),
                 "-f", "raw", "-o", str(ROOT / "bench" / "results" / f"{name}.folded"),
                 "-p", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=(ROOT / "bench" / "results" / f"{name}.py-spy.log").open("wb"),
            )  # fmt: skip
        started = time.time()
        results[name] = wrk(url, script, **run)
        results[name]["started_at"] = started
        if not name.startswith("bare"):
            scraped = httpx.get(base + "/metrics").text
            after = buckets(scraped)
            for prefix, hist in (
                ("decide", ("allotment_check_seconds", endpoint)),
                ("request", ("allotment_request_seconds", route)),
            ):
                results[name].update(server_time(before.get(hist, {}), after[hist], prefix))
            for read in ("demand/connect", "demand/total", "demand/wait", "refresh/connect",
                         "refresh/total", "refresh/late"):  # fmt: skip
                hist = ("allotment_usage_read_seconds", read)
                if hist in after:
                    results[name].update(
                        server_time(before.get(hist, {}), after[hist], read.replace("/", "_"))
                    )
            waits = ("allotment_usage_read_seconds", "demand/wait")
            if waits in after:  # how many checks waited on a demand read
                inf = float("inf")
                results[name]["demand_waits"] = after[waits][inf] - before.get(waits, {}).get(
                    inf, 0
                )
            for generation in "012":
                hist = ("allotment_gc_pause_seconds", generation)
                results[name].update(
                    gc_pauses(before.get(hist, {}), after.get(hist, {}), f"gc{generation}")
                )
            results[name]["counters"] = {
                k: v - counted.get(k, 0.0)
                for k, v in counters(scraped).items()
                if v != counted.get(k, 0.0)
            }
        if spy is not None:
            spy.wait(timeout=60)
    return results


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's figures over the rounds: the median of each (all rounds kept in the JSON)."""
    found: dict[str, Any] = {"rounds": runs}
    for field, value in runs[0].items():
        if isinstance(value, (int, float)):
            found[field] = statistics.median(r[field] for r in runs)
    found["counters"] = runs[-1].get("counters", {})
    return found


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each run against the bare reference of the same run: requests/s and p99."""
    found: dict[str, float] = {}
    bare = results["bare_check"]
    for name in ("check", "metered", "batch20", "mixed20"):
        if name in results:
            found[f"{name}_rps_vs_bare_check"] = results[name]["rps"] / bare["rps"]
            found[f"{name}_p99_vs_bare_check"] = results[name]["p99_ms"] / bare["p99_ms"]
    # docs/design.md's reference parses "a body of the same shape": for a batch, that is the
    # bare batch. Both are printed; the single check's is the stricter one.
    same = results.get("bare_batch20")
    for name in ("batch20", "mixed20"):
        if name in results and same is not None:
            found[f"{name}_p99_vs_bare_batch20"] = results[name]["p99_ms"] / same["p99_ms"]
    return found


def disturbed(round_: dict[str, dict[str, Any]]) -> bool:
    """Whether the hypervisor stole more than STOLEN_PCT of a core during any run of a round."""
    return any(r.get("stolen_pct", 0.0) > STOLEN_PCT for r in round_.values())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None,
        help="server on core 0, wrk and PostgreSQL on the rest (default with 2+ cores)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; figures are medians over them"
    )
    parser.add_argument(
        "--only", nargs="+", choices=["check", "metered", "batch20", "mixed20"],
        help="run these (and the bare references) only",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of unmeasured load before each run"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn workers for both servers (more than 1: not pinned; the server-time "
        "figures, read from /metrics, are then one worker's)",
    )
    parser.add_argument(
        "--profile",
        choices=["check", "metered", "batch20", "mixed20"],
        help="py-spy the service during this run (bench/results/<run>.folded)",
    )
    args = parser.parse_args()
    if args.workers > 1:
        SERVER_FLAGS[SERVER_FLAGS.index("--workers") + 1] = str(args.workers)
        args.pin = False  # the workers share every core with wrk and PostgreSQL
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    settings = Settings(
        database_url=os.environ.get("ALLOTMENT_DATABASE_URL") or None,
        redis_url=os.environ.get("ALLOTMENT_REDIS_URL") or None,
        data_dir=Path(tempfile.gettempdir()) / "allotment-bench",
    )
    servers = embedded.start(settings)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        database_url = fresh_database(servers, "allotment_bench")
        upgrade(database_url)
        if args.pin:
            pin(os.cpu_count() or 2)
            if not pin_postgres(libpq_url(database_url)):
                print("PostgreSQL is not on this machine: only the server and wrk are pinned")
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        key = (
            subprocess.run(
                [
                    str(BIN / "allotment"),
                    "api-keys",
                    "create",
                    "--name",
                    "bench",
                    "--scope",
                    "admin",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        port, bare_port = free_port(), free_port()
        procs.append(serve(["allotment.app:create_app", "--factory"], port, env))
        procs.append(serve(["bench.bare:app"], bare_port, env))
        base, bare = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
        customers = [f"c{i:04d}" for i in range(args.customers)]
        started = time.perf_counter()
        asyncio.run(seed(base, key, args.customers))
        print(f"seeded {args.customers} customers in {time.perf_counter() - started:.1f}s")

        # Cold: nothing has checked these customers yet, so no cache level holds them.
        cold = cold_latencies(base, key, customers[: min(500, len(customers))])
        # Warm every snapshot once.
        cold_latencies(base, key, customers)

        workdir = Path(tempfile.mkdtemp())
        single = lua(workdir / "check.lua", customers=customers, key=key, batch=0)
        batch = lua(workdir / "batch.lua", customers=customers, key=key, batch=20)
        metered = lua(
            workdir / "metered.lua", customers=customers, key=key, batch=0, features=METERED
        )
        mixed = lua(
            workdir / "mixed.lua",
            customers=customers,
            key=key,
            batch=20,
            features=MIXED,
            subjects=("u1", "u2"),
        )
        run = {"duration": args.duration, "connections": args.connections}
        one = {"feature": "f01"}
        plan = {
            "check": (base, "/v1/check", single, one),
            "bare_check": (bare, "/v1/check", single, one),
            "metered": (base, "/v1/check", metered, {"feature": METERED[0]}),
            "bare_batch20": (bare, "/v1/check/batch", batch, one),
            "batch20": (base, "/v1/check/batch", batch, {"features": FEATURES[:20]}),
            "mixed20": (base, "/v1/check/batch", mixed, {"features": MIXED[:20], "subject": "u1"}),
        }
        rounds: list[dict[str, dict[str, Any]]] = []
        for _ in range(args.repeat):
            rounds.append(measure(plan, args, base, key, customers, procs[0].pid, run))
            print(
                f"round {len(rounds)}: "
                + "; ".join(
                    f"{name} {r['rps']:.0f}/s p99 {r['p99_ms']:.1f} ms"
                    f" stolen {r['stolen_pct']:g}%"
                    + (f" gc2 {r['gc2_collections']:g}" if "gc2_collections" in r else "")
                    for name, r in rounds[-1].items()
                ),
                flush=True,
            )
        results = {name: median_run([r[name] for r in rounds]) for name in rounds[0]}

        quiet = [r for r in rounds if not disturbed(r)] or rounds
        metrics = httpx.get(base + "/metrics").text
        report = {
            "at": datetime.now(UTC).isoformat(),
            "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
            "settings": {
                **run,
                "customers": args.customers,
                "server": " ".join(SERVER_FLAGS),
                "pinned": args.pin,
            },
            "results": results,
            # Medians over the rounds no neighbour disturbed (all rounds if every one was).
            "ratios": {
                name: statistics.median(ratios(r)[name] for r in quiet)
                for name in ratios(rounds[0])
            },
            "ratios_all_rounds": {
                name: statistics.median(ratios(r)[name] for r in rounds)
                for name in ratios(rounds[0])
            },
            "disturbed_rounds": [i + 1 for i, r in enumerate(rounds) if disturbed(r)],
            "cold_check_ms": {
                "p50": statistics.median(cold),
                "p99": pct(cold, 0.99),
                "max": max(cold),
                "n": len(cold),
            },
        }
        print(
            "\n".join(
                f"{name:14s} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors'] + r['non2xx']}"
                + (
                    f"  in service: deciding p99 ≤ {r['decide_p99_ms']:g} ms, "
                    f"request p50 ≤ {r['request_p50_ms']:g} p99 ≤ {r['request_p99_ms']:g} ms"
                    if "decide_p99_ms" in r
                    else ""
                )
                for name, r in results.items()
            )
        )
        for name, r in results.items():
            for counter, value in r.get("counters", {}).items():
                print(f"  {name:12s} {counter} +{value:g}")
            reads = [k for k in r if k.endswith("_p99_ms") and k.startswith(("demand", "refresh"))]
            if reads:
                print(
                    f"  {name:12s} usage reads p99 ≤ "
                    + ", ".join(f"{k.removesuffix('_p99_ms')} {r[k]:g} ms" for k in reads)
                    + f"; checks that waited on one: {r.get('demand_waits', 0):g}"
                )
            if "gc2_collections" in r:
                print(
                    f"  {name:12s} collections (over 10 ms): "
                    + ", ".join(
                        f"gen{g} {r[f'gc{g}_collections']:g} ({r[f'gc{g}_over_10ms']:g})"
                        for g in range(3)
                    )
                )
        for name, value in report["ratios"].items():
            every = report["ratios_all_rounds"][name]
            print(f"{name:28s} {value:5.2f}   (all rounds: {every:.2f})")
        if report["disturbed_rounds"]:
            print(
                f"rounds {report['disturbed_rounds']} had over {STOLEN_PCT:g}% of a core stolen by "
                "the hypervisor: ratios are medians of the other rounds"
            )
        cold_ms = report["cold_check_ms"]
        print(
            f"cold check (1 connection, n={cold_ms['n']}): p50 {cold_ms['p50']:.2f} ms, "
            f"p99 {cold_ms['p99']:.2f} ms (client-side)"
        )
        print(
            "\n".join(
                line
                for line in metrics.splitlines()
                if line.startswith(
                    (
                        "allotment_check_seconds_sum",
                        "allotment_check_seconds_count",
                        "allotment_snapshot_cache_total",
                        "allotment_decisions_dropped",
                    )
                )
            )
        )
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / f"check-{int(time.time())}.json").write_text(json.dumps(report, indent=2))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        servers.stop()


if __name__ == "__main__":
    main()
