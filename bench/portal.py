"""The portal benchmark: each page's server time with 1,000,000 events in the period
(docs/design.md, "Targets": p99 ≤ 50 ms per page).

    .venv/bin/python bench/portal.py [--events 1000000] [--seats 500] [--instances 200]
                                     [--live-instances 40] [--runs 50]

Starts a fresh database (embedded, under a temp dir), publishes the demo policy, gives one
customer a `team` contract from the first of this month, and fills the month so far with
`--events` api.call events, each received a second after its time, seat and instance
intervals, written with SQL in the shape ingestion and the allocation services write them
(bench/invoice.py's `fill`: the events, their ids, the hourly counters), plus
`--live-instances` live leases; then VACUUM ANALYZE. Then it opens a portal
session through a one-time link and times every page through the app (in process, httpx
ASGI transport: the service's own time, no network), `--runs` times after one warm-up, and
prints min / p50 / p99 / max per page. A benchmark, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from invoice import fill, in_process  # noqa: E402

from allotment.db import libpq_url  # noqa: E402
from allotment.policy import demo_policy  # noqa: E402

# The API's reads the pages are built from, timed in the same run for comparison.
API_READS = (
    "/v1/customers/acme/entitlements",
    "/v1/customers/acme/usage?meter=api_calls",
    "/v1/customers/acme/seats?limit=100",
    "/v1/customers/acme/instances?limit=100",
    "/v1/contracts/{contract}/invoice-preview?period={period}",
    # What an invoice page computes on its first view in an hour (the pages keep it for a
    # minute, views.TAKEN_FOR): the preview as of the last whole hour, never cached here.
    "/v1/contracts/{contract}/invoice-preview?period={period}&as_of={hour}",
)

PAGES = (
    "",
    "/entitlements",
    "/graph",
    "/usage",
    "/seats",
    "/instances",
    "/invoice",
    "/invoice.csv",
)


def live_instances(libpq: str, *, customer_id: int, count: int) -> None:
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO instances (id, customer_id, fingerprint, kind, weight, environment, "
            "metadata, ttl_s, registered_at, lease_expires_at) "
            "SELECT 'ins_live' || g, %(c)s, 'live' || g, "
            "CASE WHEN g %% 2 = 0 THEN 'container' ELSE 'vm' END, 1, 'prod', '{}', 600, "
            "now() - interval '1 hour', now() + interval '1 day' "
            "FROM generate_series(1, %(n)s) g",
            {"c": customer_id, "n": count},
        )
        # The steady state: autovacuum would otherwise visit the million new rows mid-run.
        conn.execute("VACUUM ANALYZE")


async def timed(client: httpx.AsyncClient, path: str, runs: int) -> None:
    """GET `path` once to warm up, then `runs` times; print the spread."""
    first = await client.get(path)
    assert first.status_code == 200, (path, first.text[:500])
    timings = []
    for _ in range(runs):
        t0 = time.perf_counter()
        response = await client.get(path)
        timings.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200
    timings.sort()
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    shown = path.split("?")[0] + (" as of the hour" if "as_of=" in path else "")
    print(
        f"{shown:<46} min {timings[0]:6.1f} ms  p50 "
        f"{statistics.median(timings):6.1f} ms  p99 {p99:6.1f} ms  "
        f"max {timings[-1]:6.1f} ms  ({runs} runs)"
    )


async def main_async(args: argparse.Namespace) -> None:
    async with in_process("portal") as (app, database_url, secret):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://bench",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=60,
        ) as client:
            now = datetime.now(UTC)
            start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            policy = await client.post("/v1/policies", json=yaml.safe_load(demo_policy()))
            await client.post(f"/v1/policies/{policy.json()['version']}/publish")
            await client.post("/v1/customers", json={"key": "acme", "name": "Acme"})
            contract = await client.post(
                "/v1/customers/acme/contracts",
                json={
                    "plan": "team",
                    "kind": "standard",
                    "starts_at": start.isoformat(),
                    "seats": {"limit": 400},
                    "instances": {"limit": 500},
                },
            )
            assert contract.status_code == 201, contract.text
            libpq = libpq_url(database_url)
            with psycopg.connect(libpq) as conn:
                row = conn.execute("SELECT id FROM customers WHERE key = 'acme'").fetchone()
                assert row is not None
                customer_id = row[0]
                if not args.recorded_now:
                    # Recorded at the month's start, as a customer of some weeks is: a preview
                    # as of the last whole hour then sees the contract (a contract recorded in
                    # this hour takes the first hour's fallback, priced as of now).
                    for statement in (
                        "UPDATE contracts SET created_at = %(at)s, updated_at = %(at)s",
                        "UPDATE contract_revisions SET created_at = %(at)s",
                        "UPDATE policy_activations SET at = %(at)s",
                    ):
                        conn.execute(statement, {"at": start})
            began = time.perf_counter()
            args.boundaries = False
            fill(libpq, customer_id=customer_id, start=start, end=now, args=args, on_time=True)
            live_instances(libpq, customer_id=customer_id, count=args.live_instances)
            print(
                f"seeded {args.events:,} events from {start:%Y-%m-%d} to now, "
                f"{args.seats} seat and {args.instances} instance intervals, "
                f"{args.live_instances} live leases in {time.perf_counter() - began:.1f} s"
            )
            link = await client.post("/v1/customers/acme/portal-sessions")
            url = urlsplit(link.json()["url"])
            for read in API_READS:
                hour = now.replace(minute=0, second=0, microsecond=0)
                path = read.format(
                    contract=contract.json()["id"],
                    period=f"{now:%Y-%m}",
                    hour=hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
                await timed(client, path, args.runs)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=60
        ) as browser:
            opened = await browser.get(f"{url.path}?{url.query}")
            assert opened.status_code == 303, opened.text
            usage = await browser.get("/portal/customers/acme/usage")
            assert usage.status_code == 200, usage.text
            print(f"usage page: {len(usage.content):,} bytes")
            for page in PAGES:
                await timed(browser, f"/portal/customers/acme{page}", args.runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seats", type=int, default=500)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--live-instances", type=int, default=40)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--recorded-now",
        action="store_true",
        help="leave the contract recorded now (its first hour: the invoice pages price as of now)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
