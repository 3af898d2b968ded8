"""The decision-path benchmark (DESIGN §7): Allotment against the bare reference, one run.

    .venv/bin/python bench/run.py [--duration 10] [--connections 32] [--customers 1000]

Runs, side by side: `check` (boolean features, one at a time), `metered` (a metered feature
with use this month), `batch20` (20 boolean features), `mixed20` (20 features of every kind:
boolean, metered, seat-bound with and without the subject's seat, not in the plan, unknown;
duplicates as random picks make them), and the bare reference for one check and a batch.

Starts a fresh database (embedded by default, or ALLOTMENT_DATABASE_URL's server), seeds a
realistic catalog (50 features, 3 plans) and N customers with contracts through the API,
serves Allotment and `bench/bare.py` with the same uvicorn flags (one worker each), warms
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


def serve(args: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(BIN / "uvicorn"), *args, *SERVER_FLAGS, "--port", str(port)],
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


def wrk(url: str, script: Path, *, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / result["seconds"]
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the service during the check run"
    )
    args = parser.parse_args()
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
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
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
        spy = None
        if args.profile:
            spy = subprocess.Popen(
                [str(BIN / "py-spy"), "record", "-r", "200", "-d", str(args.duration), "-f", "raw",
                 "-o", str(ROOT / "bench" / "results" / "check.folded"), "-p", str(procs[0].pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        results = {
            "check": wrk(base + "/v1/check", single, **run),
            "bare_check": wrk(bare + "/v1/check", single, **run),
            "metered": wrk(base + "/v1/check", metered, **run),
            "bare_batch20": wrk(bare + "/v1/check/batch", batch, **run),
            "batch20": wrk(base + "/v1/check/batch", batch, **run),
            "mixed20": wrk(base + "/v1/check/batch", mixed, **run),
        }
        if spy is not None:
            spy.wait(timeout=60)
        metrics = httpx.get(base + "/metrics").text
        report = {
            "at": datetime.now(UTC).isoformat(),
            "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
            "settings": {**run, "customers": args.customers, "server": " ".join(SERVER_FLAGS)},
            "results": results,
            "ratios": {
                "check_rps_vs_bare": results["check"]["rps"] / results["bare_check"]["rps"],
                "check_p99_vs_bare": results["check"]["p99_ms"] / results["bare_check"]["p99_ms"],
                "batch20_rps_vs_bare_check": results["batch20"]["rps"]
                / results["bare_check"]["rps"],
                "metered_rps_vs_bare": results["metered"]["rps"] / results["bare_check"]["rps"],
                "metered_p99_vs_bare": results["metered"]["p99_ms"]
                / results["bare_check"]["p99_ms"],
                "mixed20_rps_vs_bare_check": results["mixed20"]["rps"]
                / results["bare_check"]["rps"],
                "mixed20_p99_vs_bare_check": results["mixed20"]["p99_ms"]
                / results["bare_check"]["p99_ms"],
            },
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
                for name, r in results.items()
            )
        )
        for name, value in report["ratios"].items():
            print(f"{name:28s} {value:5.2f}")
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
