"""Signed artifacts issued per second on one worker.

    .venv/bin/python bench/artifacts.py [--duration 10] [--connections 16] [--customers 200]
                                        [--bound 0.3] [--repeat 1] [--no-pin]

Starts a fresh database (embedded by default, or ALLOTMENT_DATABASE_URL's server; its own
data dir and database), publishes the demo policy and seeds --customers customers through
the API: contracts on `team` and `enterprise` (alternately), three named seats each, some
API use this month, and a live instance (`<customer>-host`) for every third one. Serves
Allotment with bench/run.py's uvicorn flags (one worker; with 2+ cores on core 0, wrk and
PostgreSQL on the others) and drives `GET /v1/customers/{key}/artifact` with `wrk`: a random
customer per request, with a random TTL of 1 h, 24 h or 7 d, and for a share (--bound) of
the requests a customer with an instance, bound to it (`?fingerprint=`). Each artifact is a
snapshot read (cached after the first), an UPDATE of the signing key's `signed_until`, an
Ed25519 signature, the audit record and the lifecycle event, in one transaction.

Prints artifacts/s (200s per second as wrk saw them), p50/p99 and the non-200 count, then
checks that one artifact verifies against the served JWKS (allotment/artifacts/verify.py)
and that the audit log holds one `artifact.issued` record per 200 (wrk stops with requests
in flight: at most --connections more). A benchmark, not a test: nothing is asserted about
time. Results: bench/results/artifacts-<time>.json. Uses `wrk` when installed, else an
httpx client loop (slower: the client then shares the cores).
"""

from __future__ import annotations

import argparse
import asyncio
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
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allotment import embedded  # noqa: E402
from allotment.artifacts.verify import verify  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from allotment.policy import demo_policy  # noqa: E402
from bench import run as check_bench  # noqa: E402
from bench.run import ROOT, free_port, fresh_database, serve  # noqa: E402
from bench.seats import mint_key  # noqa: E402

DATA_DIR = Path(tempfile.gettempdir()) / "allotment-bench-artifacts"
DATABASE = "allotment_bench_artifacts"
TTLS = (3600, 86400, 7 * 86400)

LUA = """
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
local customers = {%(customers)s}
local bound = {%(bound)s}
local ttls = {%(ttls)s}
local share = %(share)f
local hdrs = {["Authorization"]="Bearer %(key)s"}
function init(args)
  ok, failed = 0, 0
  math.randomseed(os.time() * 100 + tid)
end
function request()
  local path
  if #bound > 0 and math.random() < share then
    local c = bound[math.random(#bound)]
    path = "/v1/customers/" .. c .. "/artifact?fingerprint=" .. c .. "-host"
  else
    path = "/v1/customers/" .. customers[math.random(#customers)] .. "/artifact?ttl=" ..
      ttls[math.random(#ttls)]
  end
  return wrk.format("GET", path, hdrs)
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else failed = failed + 1 end
end
function done(summary, latency, requests)
  local o, f = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); f = f + t:get("failed") end
  io.write(string.format('RESULT {"requests": %%d, "seconds": %%f, "errors": %%d, ' ..
    '"ok": %%d, "non200": %%d, "p50_ms": %%f, "p90_ms": %%f, "p99_ms": %%f, "max_ms": %%f}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    o, f, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


async def seed(base: str, key: str, customers: list[str]) -> list[str]:
    """The demo policy, the customers and their state; returns those with an instance."""
    headers = {"Authorization": f"Bearer {key}"}
    starts_at = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    bound: list[str] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        created = await client.post(
            "/v1/policies", content=demo_policy(), headers={"Content-Type": "application/yaml"}
        )
        created.raise_for_status()
        version = created.json()["version"]
        (await client.post(f"/v1/policies/{version}/publish")).raise_for_status()
        semaphore = asyncio.Semaphore(16)

        async def one(i: int, customer: str) -> None:
            async with semaphore:
                plan = ("team", "enterprise")[i % 2]
                (
                    await client.post("/v1/customers", json={"key": customer, "name": customer})
                ).raise_for_status()
                (
                    await client.post(
                        f"/v1/customers/{customer}/contracts",
                        json={"plan": plan, "kind": "standard", "starts_at": starts_at},
                    )
                ).raise_for_status()
                for subject in ("ann", "bob", "cy"):
                    (
                        await client.post(
                            f"/v1/customers/{customer}/seats", json={"subject": subject}
                        )
                    ).raise_for_status()
                events = [
                    {"specversion": "1.0", "id": f"{customer}-{n}", "source": "bench",
                     "type": "api.call", "subject": customer, "data": {"count": 10 + n}}
                    for n in range(5)
                ]  # fmt: skip
                (
                    await client.post(
                        "/v1/events",
                        json=events,
                        headers={"Content-Type": "application/cloudevents-batch+json"},
                    )
                ).raise_for_status()
                if i % 3 == 0:
                    (
                        await client.post(
                            f"/v1/customers/{customer}/instances",
                            json={"fingerprint": f"{customer}-host", "kind": "vm"},
                        )
                    ).raise_for_status()
                    bound.append(customer)

        await asyncio.gather(*(one(i, c) for i, c in enumerate(customers)))
    return sorted(bound)


def lua(path: Path, *, customers: list[str], bound: list[str], key: str, share: float) -> Path:
    path.write_text(
        LUA
        % {
            "customers": ",".join(f'"{c}"' for c in customers),
            "bound": ",".join(f'"{c}"' for c in bound),
            "ttls": ",".join(str(t) for t in TTLS),
            "share": share,
            "key": key,
        }
    )
    return path


def wrk(url: str, script: Path, *, duration: int, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        [*check_bench.LOAD_CORES, "wrk", f"-t{min(2, connections)}", f"-c{connections}",
         f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["artifacts_per_s"] = result["ok"] / result["seconds"]
    result["driver"] = "wrk"
    return result


async def httpx_loop(
    base: str,
    key: str,
    *,
    customers: list[str],
    bound: list[str],
    share: float,
    duration: int,
    connections: int,
) -> dict[str, Any]:
    """wrk's run without wrk: `connections` tasks, each one request at a time."""
    import random

    latencies: list[float] = []
    failed = 0
    stop = time.perf_counter() + duration
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:

        async def loop() -> None:
            nonlocal failed
            while time.perf_counter() < stop:
                if bound and random.random() < share:
                    customer = random.choice(bound)
                    params: dict[str, Any] = {"fingerprint": f"{customer}-host"}
                else:
                    customer = random.choice(customers)
                    params = {"ttl": random.choice(TTLS)}
                started = time.perf_counter()
                response = await client.get(f"/v1/customers/{customer}/artifact", params=params)
                latencies.append((time.perf_counter() - started) * 1000)
                failed += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        seconds = time.perf_counter() - started
    latencies.sort()
    ok = len(latencies) - failed
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "ok": ok,
        "non200": failed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "artifacts_per_s": ok / seconds,
        "driver": "httpx",
    }


def audited(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'artifact.issued'"
        ).fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--bound", type=float, default=0.3, help="share of machine-bound asks")
    parser.add_argument("--repeat", type=int, default=1, help="measured runs; medians reported")
    parser.add_argument("--no-pin", action="store_true", help="leave the cores to the scheduler")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None
    cores = os.cpu_count() or 1
    if not args.no_pin and cores >= 2 and shutil.which("taskset"):
        check_bench.pin(cores)

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
        if check_bench.LOAD_CORES:
            check_bench.pin_postgres(database_url)
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-artifacts-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "ALLOTMENT_SIGNING_SECRET": "bench-signing-secret",
            "PYTHONPATH": str(ROOT),
        }
        admin, check = mint_key(env, "admin"), mint_key(env, "check")
        port = free_port()
        procs.append(serve(["allotment.app:create_app", "--factory"], port, env))
        base = f"http://127.0.0.1:{port}"
        customers = [f"ar{i:04d}" for i in range(args.customers)]
        started = time.perf_counter()
        bound = asyncio.run(seed(base, admin, customers))
        print(
            f"seeded {len(customers)} customers ({len(bound)} with a live instance) in "
            f"{time.perf_counter() - started:.1f}s; driver: {'wrk' if use_wrk else 'httpx'}"
        )
        workdir = Path(tempfile.mkdtemp(prefix="allotment-bench-artifacts-"))
        script = lua(workdir / "artifacts.lua", customers=customers, bound=bound, key=check,
                     share=args.bound)  # fmt: skip

        def drive(duration: int) -> dict[str, Any]:
            if use_wrk:
                return wrk(base, script, duration=duration, connections=args.connections)
            return asyncio.run(
                httpx_loop(base, check, customers=customers, bound=bound, share=args.bound,
                           duration=duration, connections=args.connections)
            )  # fmt: skip

        drive(2)  # warm: snapshots, the key ring, connection pools
        time.sleep(2)  # the warm run's last responses, which wrk never read, commit
        runs = []
        for _ in range(args.repeat):
            before = audited(database_url)
            result = drive(args.duration)
            time.sleep(2)  # the responses wrk never read
            result["audited"] = audited(database_url) - before
            runs.append(result)
            print(
                f"artifacts: {result['artifacts_per_s']:,.0f}/s  p50 {result['p50_ms']:.1f} ms  "
                f"p99 {result['p99_ms']:.1f} ms  non-200 {result['non200']}  "
                f"(200s {result['ok']}, audited {result['audited']})"
            )
        lost = [r for r in runs if not r["ok"] <= r["audited"] <= r["ok"] + args.connections]

        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {check}"}) as client:
            token = client.get(f"/v1/customers/{bound[0]}/artifact",
                               params={"fingerprint": f"{bound[0]}-host"}).text  # fmt: skip
            keys = client.get("/.well-known/jwks.json").json()
        verified = verify(token, keys, fingerprint=f"{bound[0]}-host")
        print(f"one artifact verifies: {verified.summary()}")

        median = statistics.median(r["artifacts_per_s"] for r in runs)
        summary = {
            "at": datetime.now(UTC).isoformat(),
            "args": vars(args),
            "cores": cores,
            "pinned": bool(check_bench.LOAD_CORES),
            "runs": runs,
            "median_artifacts_per_s": median,
            "artifact_bytes": len(token),
        }
        out = ROOT / "bench" / "results" / f"artifacts-{int(time.time())}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
        print(f"median {median:,.0f} artifacts/s; artifact {len(token):,} bytes; results: {out}")
        if lost:
            sys.exit(f"audit records do not match the 200s: {lost}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        servers.stop()


if __name__ == "__main__":
    main()
