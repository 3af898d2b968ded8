"""The Python SDK: local checks per second on one core, track() into the service, and how
soon a revoking amendment reaches a client in local mode.

    .venv/bin/python bench/sdk.py [--checks 1000000] [--events 50000] [--amendments 20]

Starts a fresh database (embedded by default, or ALLOTMENT_DATABASE_URL's server; its own
data dir and database), serves Allotment with bench/run.py's uvicorn flags (one worker, on
core 0 when there are 2+ cores), publishes the demo policy and gives two customers a
contract (`team`, `enterprise`). Then, in this process, pinned to one other core:

1. **Local checks.** `Allotment(local=True)`, artifacts fetched, then `check()` round-robin
   over a mix: allowed, denied (not in plan), a soft-limited metered feature, an unknown
   feature, a seat feature without a subject, a denial that holds whatever the check names.
   Throughput over --checks calls, then each call timed (perf_counter_ns) for p50/p99.
   Checks that need the service (a seat feature naming a subject, a hard-limited meter) are
   run separately and counted, their latency reported apart: they are HTTP calls.
2. **track().** --events events tracked as fast as the loop goes, then `flush()`: events
   per second from the first track() to the service acknowledging the last; the count in
   PostgreSQL is checked (exactly --events).
3. **Revocation lag.** --amendments times: revoke `reports` (or grant it back) through the
   API, then poll the local check until it flips: time from the PATCH's answer.

A benchmark, not a test: timings are reported, not asserted. Results:
bench/results/sdk-<time>.json.
"""

from __future__ import annotations

import argparse
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
from allotment.config import Settings  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from allotment.policy import demo_policy  # noqa: E402
from allotment_client import Allotment  # noqa: E402
from bench.run import ROOT, free_port, fresh_database, pct, pin, serve  # noqa: E402
from bench.seats import mint_key  # noqa: E402

DATA_DIR = Path(tempfile.gettempdir()) / "allotment-bench-sdk"
DATABASE = "allotment_bench_sdk"
TEAM, BIG = "sdk-team", "sdk-big"

LOCAL_MIX: list[tuple[str, str, dict[str, Any]]] = [
    (TEAM, "reports", {}),  # allowed
    (TEAM, "sso", {}),  # denied: not in the plan
    (BIG, "api", {}),  # a soft limit: allowed, with the limit
    (TEAM, "teleport", {}),  # unknown
    (TEAM, "dashboards", {}),  # allowed
    (TEAM, "editor", {}),  # a seat feature, no subject: seat_required
    (TEAM, "scim", {"subject": "ann"}),  # denied before rules, whatever it names
    (BIG, "sso", {}),  # allowed: its rule reads the contract only
]
REMOTE_MIX: list[tuple[str, str, dict[str, Any]]] = [
    (TEAM, "editor", {"subject": "ann"}),  # the subject's seat
    (TEAM, "api", {}),  # a hard limit: the live counter
]


def seed(base: str, key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    starts_at = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    contracts: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        created = http.post(
            "/v1/policies", content=demo_policy(), headers={"Content-Type": "application/yaml"}
        )
        created.raise_for_status()
        http.post(f"/v1/policies/{created.json()['version']}/publish").raise_for_status()
        for customer, plan in ((TEAM, "team"), (BIG, "enterprise")):
            http.post("/v1/customers", json={"key": customer, "name": customer}).raise_for_status()
            made = http.post(
                f"/v1/customers/{customer}/contracts", json={"plan": plan, "starts_at": starts_at}
            )
            made.raise_for_status()
            contracts[customer] = made.json()
        http.post(f"/v1/customers/{TEAM}/seats", json={"subject": "ann"}).raise_for_status()
    return contracts


def local_checks(sdk: Allotment, n: int) -> dict[str, Any]:
    mix = LOCAL_MIX
    for customer, feature, kw in mix:  # fetch the artifacts; every one must answer locally
        assert sdk.check(customer, feature, **kw).local, (customer, feature)
    check = sdk.check
    calls = [(customer, feature, kw) for customer, feature, kw in mix]
    rounds = n // len(calls)
    started = time.perf_counter()
    for _ in range(rounds):
        for customer, feature, kw in calls:
            check(customer, feature, **kw)
    elapsed = time.perf_counter() - started
    timings: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(min(rounds, 200_000 // len(calls))):
        for customer, feature, kw in calls:
            before = clock()
            check(customer, feature, **kw)
            timings.append(clock() - before)
    micros = [t / 1000 for t in timings]
    return {
        "calls": rounds * len(calls),
        "per_second": round(rounds * len(calls) / elapsed),
        "p50_us": round(pct(micros, 0.50), 2),
        "p99_us": round(pct(micros, 0.99), 2),
        "max_us": round(max(micros), 1),
    }


def remote_checks(sdk: Allotment, n: int) -> dict[str, Any]:
    timings: list[float] = []
    remote = 0
    for i in range(n):
        customer, feature, kw = REMOTE_MIX[i % len(REMOTE_MIX)]
        before = time.perf_counter()
        decision = sdk.check(customer, feature, **kw)
        timings.append((time.perf_counter() - before) * 1000)
        remote += not decision.local
    return {
        "calls": n,
        "went_to_the_service": remote,
        "p50_ms": round(pct(timings, 0.5), 2),
        "p99_ms": round(pct(timings, 0.99), 2),
    }


def track(sdk: Allotment, n: int, database_url: str) -> dict[str, Any]:
    started = time.perf_counter()
    for i in range(n):
        sdk.track("api.call", TEAM if i % 2 else BIG, {"count": 1})
    tracked = time.perf_counter() - started
    assert sdk.flush(600), "events not delivered"
    delivered = time.perf_counter() - started
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM usage_event_ids WHERE source = %s", ("bench-sdk",)
        ).fetchone()
    counted = int(row[0]) if row else 0
    return {
        "events": n,
        "track_per_second": round(n / tracked),
        "delivered_per_second": round(n / delivered),
        "counted_in_postgres": counted,
    }


def revocations(
    sdk: Allotment, base: str, key: str, contract: dict[str, Any], n: int
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    lags: list[float] = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        for i in range(n):
            revoke = i % 2 == 0
            overrides = [{"feature": "reports", "action": "revoke", "reason": "bench"}]
            answer = http.patch(
                f"/v1/contracts/{contract['id']}",
                json={"overrides": overrides if revoke else []},
                headers={"If-Match": str(contract["revision"])},
            )
            answer.raise_for_status()
            contract = answer.json()
            acknowledged = time.perf_counter()
            while sdk.check(TEAM, "reports").allowed == revoke:
                if time.perf_counter() - acknowledged > 10:
                    raise RuntimeError("the change never reached the SDK")
                time.sleep(0.0005)
            lags.append((time.perf_counter() - acknowledged) * 1000)
    return {
        "amendments": n,
        "p50_ms": round(statistics.median(lags), 1),
        "max_ms": round(max(lags), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=1_000_000)
    parser.add_argument("--remote", type=int, default=400)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--amendments", type=int, default=20)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if cores >= 2 and shutil.which("taskset"):
        pin(cores)
        os.sched_setaffinity(0, {cores - 1})  # this process (the SDK): one core
    settings = Settings(
        database_url=os.environ.get("ALLOTMENT_DATABASE_URL") or None,
        redis_url=os.environ.get("ALLOTMENT_REDIS_URL") or None,
        data_dir=DATA_DIR,
    )
    servers = embedded.start(settings)
    proc: subprocess.Popen[bytes] | None = None
    try:
        database_url = fresh_database(servers, DATABASE)
        upgrade(database_url)
        env = {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": database_url,
            "ALLOTMENT_REDIS_URL": servers.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": f"allotment-bench-sdk-{os.getpid()}",
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "ALLOTMENT_DATA_DIR": str(DATA_DIR),
            "PYTHONPATH": str(ROOT),
        }
        admin, check = mint_key(env, "admin"), mint_key(env, "check")
        port = free_port()
        proc = serve(["allotment.app:create_app", "--factory"], port, env)
        base = f"http://127.0.0.1:{port}"
        contracts = seed(base, admin)
        spool = Path(tempfile.mkdtemp(prefix="allotment-bench-sdk-spool-"))
        with Allotment(base, check, local=True, source="bench-sdk", spool=spool) as sdk:
            assert sdk.refresher is not None and sdk.refresher.connected.wait(10)
            results = {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "cores": cores,
                "local_checks": local_checks(sdk, args.checks),
                "remote_checks": remote_checks(sdk, args.remote),
                "track": track(sdk, args.events, database_url),
                "revocation_lag": revocations(sdk, base, admin, contracts[TEAM], args.amendments),
            }
        shutil.rmtree(spool, ignore_errors=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        servers.stop()
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"sdk-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
