"""OFREP single-flag evaluation against /v1/check, in the same run, on the same server.

    .venv/bin/python bench/ofrep.py [--duration 10] [--connections 32] [--customers 300]
                                    [--repeat 1] [--no-pin]

Seeds bench/run.py's catalog (50 boolean features, metered and seat-bound ones, 3 plans) and
--customers customers, serves Allotment with bench/run.py's uvicorn flags (one worker), then
drives it with `wrk`, one run after the other, alternating the two APIs:

    check_bool / ofrep_bool   boolean features every plan has (f00–f14): all allowed
    check_mix  / ofrep_mix    a realistic mix, picked at random per request: features allowed
                              or not by the plan (f15–f24, f45), metered (m00), seat-bound
                              with and without the subject's seat (s00; subjects u1 and u2),
                              an unknown name; OFREP adds limit flags (api_calls.limit,
                              m01.remaining) where /v1/check has the metered features m00/m01

Every request names a customer and a subject (OFREP: `targetingKey`). The unknown flag is a
404 in OFREP (FLAG_NOT_FOUND) and a 200 in /v1/check (`feature_unknown`); wrk counts the
404s as non-2xx, shown beside the figures. Prints requests/s, p50 and p99 per run and the
OFREP / check ratios (medians over --repeat rounds). A benchmark, not a test. Results:
bench/results/ofrep-<time>.json. Needs `wrk` (apt-get install wrk).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allotment import embedded  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.db import libpq_url  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from bench.run import (  # noqa: E402
    BIN,
    FEATURES,
    ROOT,
    SERVER_FLAGS,
    free_port,
    fresh_database,
    pin,
    pin_postgres,
    seed,
    serve,
    wrk,
)

DATA_DIR = Path(tempfile.gettempdir()) / "allotment-bench-ofrep"
DATABASE = "allotment_bench_ofrep"
BOOLEAN = FEATURES[:15]
MIX_COMMON = [*FEATURES[15:25], "f45", "m00", "s00", "nope"]
MIX_OFREP = [*MIX_COMMON, "api_calls.limit", "m01.remaining"]
MIX_CHECK = [*MIX_COMMON, "m00", "m01"]

LUA = """
local customers = {%(customers)s}
local flags = {%(flags)s}
local subjects = {"u1", "u2"}
local ofrep = %(ofrep)s
local key = "%(key)s"
request = function()
  local c = customers[math.random(#customers)]
  local s = subjects[math.random(#subjects)]
  local f = flags[math.random(#flags)]
  local path, body
  if ofrep then
    path = "/ofrep/v1/evaluate/flags/" .. f
    body = '{"context":{"targetingKey":"' .. s .. '","customer":"' .. c .. '"}}'
  else
    path = "/v1/check"
    body = '{"customer":"' .. c .. '","subject":"' .. s .. '","feature":"' .. f .. '"}'
  end
  return wrk.format("POST", path, {["Content-Type"]="application/json",
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


def script(path: Path, *, customers: list[str], flags: list[str], ofrep: bool, key: str) -> Path:
    path.write_text(
        LUA
        % {
            "customers": ",".join(f'"{c}"' for c in customers),
            "flags": ",".join(f'"{f}"' for f in flags),
            "ofrep": "true" if ofrep else "false",
            "key": key,
        }
    )
    return path


async def warm(base: str, key: str, customers: list[str]) -> None:
    """One OFREP evaluation of a metered flag per customer: every snapshot cached and every
    customer's meter use read (and being refreshed) before anything is measured."""
    headers = {"Authorization": f"Bearer {key}"}
    semaphore = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def one(customer: str) -> None:
            async with semaphore:
                body = {"context": {"targetingKey": "u1", "customer": customer}}
                (await client.post("/ofrep/v1/evaluate/flags/m00", json=body)).raise_for_status()

        await asyncio.gather(*(one(c) for c in customers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None,
        help="server on core 0, wrk and PostgreSQL on the rest (default with 2+ cores)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

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
        if args.pin:
            pin(os.cpu_count() or 2)
            pin_postgres(libpq_url(database_url))
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-ofrep-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        created = subprocess.run(
            [str(BIN / "allotment"), "api-keys", "create", "--name", "bench", "--scope", "admin"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        port = free_port()
        procs.append(serve(["allotment.app:create_app", "--factory"], port, env))
        base = f"http://127.0.0.1:{port}"
        customers = [f"c{i:04d}" for i in range(args.customers)]
        started = time.perf_counter()
        asyncio.run(seed(base, key, args.customers))
        print(f"seeded {args.customers} customers in {time.perf_counter() - started:.1f}s")
        asyncio.run(warm(base, key, customers))

        workdir = Path(tempfile.mkdtemp())
        runs = (
            ("check_bool", BOOLEAN, False),
            ("ofrep_bool", BOOLEAN, True),
            ("check_mix", MIX_CHECK, False),
            ("ofrep_mix", MIX_OFREP, True),
        )
        plan = {
            name: script(workdir / f"{name}.lua", customers=customers, flags=f, ofrep=o, key=key)
            for name, f, o in runs
        }
        run = {"duration": args.duration, "connections": args.connections}
        rounds: list[dict[str, dict[str, Any]]] = []
        for _ in range(args.repeat):
            results: dict[str, dict[str, Any]] = {}
            for name, lua in plan.items():
                if args.warmup:
                    wrk(base, lua, duration=args.warmup, connections=args.connections)
                results[name] = wrk(base, lua, **run)
            rounds.append(results)
            print(
                f"round {len(rounds)}: "
                + "; ".join(
                    f"{n} {r['rps']:.0f}/s p99 {r['p99_ms']:.1f} ms" for n, r in results.items()
                ),
                flush=True,
            )
        fields = ("rps", "p50_ms", "p99_ms", "non2xx", "errors", "requests", "stolen_pct")
        medians = {
            name: {field: statistics.median(r[name][field] for r in rounds) for field in fields}
            for name in plan
        }
        ratios = {
            kind: statistics.median(
                r[f"ofrep_{kind}"]["rps"] / r[f"check_{kind}"]["rps"] for r in rounds
            )
            for kind in ("bool", "mix")
        }
        for name, r in medians.items():
            print(
                f"{name:11s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                f"p99 {r['p99_ms']:6.2f} ms  non-2xx {r['non2xx']:g} of {r['requests']:g}  "
                f"errors {r['errors']:g}  stolen {r['stolen_pct']:g}%"
            )
        for kind, value in ratios.items():
            print(f"ofrep / check ({kind}): {value:.2f}")
        report = {
            "at": datetime.now(UTC).isoformat(),
            "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
            "settings": {
                **run,
                "customers": args.customers,
                "repeat": args.repeat,
                "server": " ".join(SERVER_FLAGS),
                "pinned": args.pin,
            },
            "results": medians,
            "rounds": rounds,
            "ratios": ratios,
        }
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / f"ofrep-{int(time.time())}.json").write_text(json.dumps(report, indent=2))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        servers.stop()


if __name__ == "__main__":
    main()
