"""The sidecar agent's local `/v1/check` against the bare reference, side by side in one run
(docs/design.md "Targets": agent local `/v1/check` ≥ 0.9 × bare FastAPI).

    .venv/bin/python bench/agent.py [--duration 10] [--connections 32] [--customers 100]
                                       [--rounds 3]

Starts a fresh database (embedded by default, or ALLOTMENT_DATABASE_URL's server), serves
Allotment as the upstream and seeds bench/run.py's catalog (50 features, 3 plans, N
customers with a contract and a seat for `u1`). Then serves, one at a time on the same core
with the same uvicorn flags (uvloop, httptools, one worker): the agent (`allotment-agent`,
its artifacts fetched for every customer first) and `bench/bare.py`. wrk drives each with
the same settings and the same Lua body generator:

- `agent_local`: a mix the artifacts decide — allowed features, a feature not in the plan of
  two plans out of three, an unknown feature, a seat feature without a subject;
- `bare`: the same bodies to the bare app (parse a pydantic body, return a constant);
- `agent_forwarded`: seat features naming a subject (the subject's seat: the upstream
  decides), reported apart — those are the upstream's speed plus a hop.

Rounds alternate agent and bare; medians are reported, with the ratio. A benchmark, not a
test: nothing passes or fails. Results: bench/results/agent-<time>.json. Needs wrk.
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
    SEATED,
    SERVER_CORES,
    free_port,
    fresh_database,
    lua,
    pin,
    pin_postgres,
    seed,
    serve,
    wrk,
)
from bench.seats import mint_key  # noqa: E402

DATA_DIR = Path(tempfile.gettempdir()) / "allotment-bench-agent"
DATABASE = "allotment_bench_agent"
# Decided by the artifact: 20 allowed (every plan has f00–f19), f45 (only `max` has it),
# an unknown feature, a seat feature without a subject (seat_required).
LOCAL_MIX = [*FEATURES[:20], "f45", "f45", "nope", "s00"]


def serve_agent(upstream: str, key: str, port: int, spool: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*SERVER_CORES, str(BIN / "allotment-agent"), "--upstream", upstream, "--key", key,
         "--listen", f"127.0.0.1:{port}", "--spool", str(spool), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the agent did not start")


async def warm(base: str, customers: list[str]) -> None:
    """Ask about every customer until the agent answers from its artifact."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for customer in customers:
            for _ in range(500):
                answer = await client.post(
                    "/v1/check", json={"customer": customer, "feature": "f01"}
                )
                if answer.headers.get("allotment-decided-by") == "agent":
                    break
                await asyncio.sleep(0.02)
            else:
                raise RuntimeError(f"no artifact for {customer}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/agent.py needs wrk (apt-get install wrk)")
    cores = os.cpu_count() or 1
    if cores >= 2 and shutil.which("taskset"):
        pin(cores)
    settings = Settings(
        database_url=os.environ.get("ALLOTMENT_DATABASE_URL") or None,
        redis_url=os.environ.get("ALLOTMENT_REDIS_URL") or None,
        data_dir=DATA_DIR,
    )
    servers = embedded.start(settings)
    upstream = agent = bare = None
    spool = Path(tempfile.mkdtemp(prefix="allotment-bench-agent-spool-"))
    scripts = Path(tempfile.mkdtemp(prefix="allotment-bench-agent-lua-"))
    rounds: list[dict[str, Any]] = []
    try:
        database_url = fresh_database(servers, DATABASE)
        upgrade(database_url)
        if cores >= 2:
            pin_postgres(libpq_url(database_url))
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-agent-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "ALLOTMENT_DATA_DIR": str(DATA_DIR),
            "PYTHONPATH": str(ROOT),
        }
        admin, check = mint_key(env, "admin"), mint_key(env, "check")
        upstream_port, agent_port, bare_port = free_port(), free_port(), free_port()
        # The upstream is not under test: it runs where the load runs, off the server core.
        saved = SERVER_CORES[:]
        SERVER_CORES[:] = []
        upstream = serve(["allotment.app:create_app", "--factory"], upstream_port, env)
        SERVER_CORES[:] = saved
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        customers = [f"c{i:04d}" for i in range(args.customers)]
        asyncio.run(seed(upstream_url, admin, args.customers))
        local = lua(
            scripts / "local.lua", customers=customers, key=check, batch=0, features=LOCAL_MIX
        )
        forwarded = lua(
            scripts / "forwarded.lua", customers=customers, key=check, batch=0,
            features=SEATED, subjects=("u1", "u2"),
        )  # fmt: skip
        run = {"duration": args.duration, "connections": args.connections}
        for _ in range(args.rounds):
            found: dict[str, Any] = {}
            agent = serve_agent(upstream_url, check, agent_port, spool)
            asyncio.run(warm(f"http://127.0.0.1:{agent_port}", customers))
            found["agent_local"] = wrk(f"http://127.0.0.1:{agent_port}/v1/check", local, **run)
            found["agent_forwarded"] = wrk(
                f"http://127.0.0.1:{agent_port}/v1/check", forwarded, **run
            )
            stop(agent)
            bare = serve(["bench.bare:app"], bare_port, env)
            found["bare"] = wrk(f"http://127.0.0.1:{bare_port}/v1/check", local, **run)
            stop(bare)
            rounds.append(found)
            print(json.dumps({k: round(v["rps"]) for k, v in found.items()}), flush=True)
    finally:
        stop(agent)
        stop(bare)
        stop(upstream)
        servers.stop()
        shutil.rmtree(spool, ignore_errors=True)
        shutil.rmtree(scripts, ignore_errors=True)
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cores": cores,
        "pinned": bool(SERVER_CORES),
    }
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        results[name] = {
            field: statistics.median(r[field] for r in runs)
            for field in ("rps", "p50_ms", "p99_ms", "errors", "non2xx", "stolen_pct")
        }
        results[name]["rounds"] = runs
    results["agent_local_vs_bare_rps"] = results["agent_local"]["rps"] / results["bare"]["rps"]
    results["per_round_ratio"] = [r["agent_local"]["rps"] / r["bare"]["rps"] for r in rounds]
    print(json.dumps({k: v for k, v in results.items() if k != "rounds"}, indent=2, default=str))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"agent-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
