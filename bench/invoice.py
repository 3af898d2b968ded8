"""The invoice-preview benchmark: ≤ 200 ms with 1,000,000 events in the month
(docs/design.md, "Targets").

    .venv/bin/python bench/invoice.py [--events 1000000] [--seats 500] [--instances 200] [--runs 20]
                                      [--boundaries]

Starts a fresh database (embedded, under a temp dir), publishes the demo policy, gives one
customer a `team` contract from the first of last month, and fills that month with
`--events` api.call events (evenly spread over it), `--seats` member-seat intervals and
`--instances` instance leases. The events are written with SQL in the shape ingestion writes
them (`usage_event_ids`,
`usage_events`, then `usage_counters` aggregated per hour from those events, as ingest keeps
them): pushing a million events through the API would measure ingestion, which
bench/events.py does. Then it times `GET /v1/contracts/{id}/invoice-preview?period=<last
month>` through the app (in process, httpx ASGI transport: the service's own time, no
network), `--runs` times after one warm-up, and prints min / p50 / p99 / max and the lines.
With `--boundaries`, the contract starts at 19:53:17 on the 1st, is amended on the 15th at
10:17:45 and ends 3 h 12 min 5 s before the month does, and 2 % of the events arrive after
the preview's `as_of`: every hour a boundary cuts is read from its events and the late ones
are left out (docs/billing.md, "Boundaries" and "Taken at an instant").
A benchmark, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from run import fresh_database  # noqa: E402

from allotment import embedded  # noqa: E402
from allotment.app import create_app  # noqa: E402
from allotment.auth import service as keys  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.db import libpq_url, session_scope  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from allotment.policy import demo_policy  # noqa: E402


def last_month(now: datetime) -> tuple[datetime, datetime]:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = (first - timedelta(days=1)).replace(day=1)
    return previous, first


def fill(
    libpq: str,
    *,
    customer_id: int,
    start: datetime,
    end: datetime,
    args: argparse.Namespace,
    on_time: bool = False,
) -> None:
    """`on_time`: each event is received a second after its `time`, as a live stream arrives
    (the current month, bench/portal.py), rather than all at the moment of seeding."""
    seconds = int((end - start).total_seconds())
    with psycopg.connect(libpq, autocommit=True) as conn:
        for month in (start, end):
            name = f"usage_events_y{month.year:04d}m{month.month:02d}"
            nxt = (month + timedelta(days=32)).replace(day=1)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF usage_events FOR VALUES "
                f"FROM ('{month.isoformat()}') TO ('{nxt.isoformat()}')"
            )
        conn.execute(
            "INSERT INTO usage_event_ids (source, id, customer_id, time, received_at) "
            "SELECT 'bench', 'e' || g, %(c)s, "
            "%(s)s + make_interval(secs => (g::bigint * %(secs)s / (%(n)s + 1))::int), "
            "CASE WHEN %(late)s AND g %% 50 = 0 THEN now() + interval '1 hour' "
            "WHEN %(on_time)s THEN %(s)s + make_interval(secs => "
            "(g::bigint * %(secs)s / (%(n)s + 1))::int + 1) ELSE now() END "
            "FROM generate_series(1, %(n)s) g",
            {
                "c": customer_id,
                "s": start,
                "secs": seconds,
                "n": args.events,
                "late": args.boundaries,
                "on_time": on_time,
            },
        )
        conn.execute(
            "INSERT INTO usage_events "
            "(customer_id, tenant, type, source, id, time, data, received_at) "
            "SELECT customer_id, NULL, 'api.call', source, id, time, "
            "jsonb_build_object('count', 1 + (hashtext(id) & 3)), received_at "
            "FROM usage_event_ids WHERE source = 'bench'"
        )
        conn.execute(
            "INSERT INTO usage_counters (customer_id, meter, hour, tenant, kind, value, events) "
            "SELECT customer_id, 'api_calls', date_trunc('hour', time, 'UTC'), '', 'add', "
            "sum((data->>'count')::numeric), count(*) FROM usage_events "
            "WHERE source = 'bench' GROUP BY 1, 3"
        )
        conn.execute(
            "INSERT INTO seats (id, customer_id, subject, type, assigned_at, released_at) "
            "SELECT 'seat_b' || g, %(c)s, 'user' || g, 'member', "
            "%(s)s + make_interval(secs => (g * 7919) %% %(secs)s), "
            "CASE WHEN g %% 3 = 0 THEN NULL ELSE %(s)s + make_interval(secs => "
            "(g * 7919) %% %(secs)s + 3600 * (1 + g %% 200)) END "
            "FROM generate_series(1, %(n)s) g",
            {"c": customer_id, "s": start, "secs": seconds, "n": args.seats},
        )
        conn.execute(
            "INSERT INTO instances (id, customer_id, fingerprint, kind, weight, environment, "
            "metadata, ttl_s, registered_at, lease_expires_at, ended_at, end_reason) "
            "SELECT 'ins_b' || g, %(c)s, 'fp' || g, "
            "CASE WHEN g %% 4 = 0 THEN 'cluster' ELSE 'vm' END, "
            "CASE WHEN g %% 4 = 0 THEN 4 ELSE 1 END, 'prod', '{}', 600, "
            "%(s)s + make_interval(secs => (g * 104729) %% %(secs)s), "
            "%(s)s + make_interval(secs => (g * 104729) %% %(secs)s + 1800 * (1 + g %% 50)), "
            "%(s)s + make_interval(secs => (g * 104729) %% %(secs)s + 1800 * (1 + g %% 50)), "
            "'expired' FROM generate_series(1, %(n)s) g",
            {"c": customer_id, "s": start, "secs": seconds, "n": args.instances},
        )
        conn.execute("ANALYZE")


@asynccontextmanager
async def in_process(name: str) -> AsyncIterator[tuple[Any, str, str]]:
    """A fresh database `bench_<name>` in embedded servers under a temp dir, migrated, and
    the app started in process on it: (app, database URL, an admin key)."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"allotment-bench-{name}-"))
    servers = embedded.start(Settings(data_dir=data_dir))
    try:
        database_url = fresh_database(servers, f"bench_{name}")
        upgrade(database_url)
        settings = Settings(
            database_url=database_url,
            redis_url=servers.redis_url,
            redis_namespace=f"bench-{name}",
            log_level="WARNING",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with session_scope(app.state.sessionmaker) as session:
                _, secret = await keys.create(
                    session, name="bench", scopes=["admin"], actor="bench"
                )
            yield app, database_url, secret
    finally:
        servers.stop()


async def main_async(args: argparse.Namespace) -> None:
    async with in_process("invoice") as (app, database_url, secret):
        headers = {"Authorization": f"Bearer {secret}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers, timeout=60
        ) as client:
            now = datetime.now(UTC)
            start, end = last_month(now)
            policy = await client.post("/v1/policies", json=yaml.safe_load(demo_policy()))
            version = policy.json()["version"]
            await client.post(f"/v1/policies/{version}/publish")
            await client.post("/v1/customers", json={"key": "acme", "name": "Acme"})
            terms: dict[str, object] = {
                "plan": "team",
                "kind": "standard",
                "starts_at": start.isoformat(),
                "seats": {"limit": 400},
                "instances": {"limit": 500},
            }
            if args.boundaries:
                terms["starts_at"] = (
                    start + timedelta(hours=19, minutes=53, seconds=17)
                ).isoformat()
                terms["ends_at"] = (end - timedelta(hours=3, minutes=12, seconds=5)).isoformat()
            contract = (await client.post("/v1/customers/acme/contracts", json=terms)).json()
            if args.boundaries:
                amended = await client.patch(
                    f"/v1/contracts/{contract['id']}",
                    json={
                        "seats": {"limit": 450},
                        "effective_at": (
                            start + timedelta(days=14, hours=10, minutes=17, seconds=45)
                        ).isoformat(),
                    },
                    headers={"If-Match": str(contract["revision"])},
                )
                assert amended.status_code == 200, amended.text
            libpq = libpq_url(database_url)
            with psycopg.connect(libpq) as conn:
                customer_id = conn.execute(
                    "SELECT id FROM customers WHERE key = 'acme'"
                ).fetchone()[0]
            began = time.perf_counter()
            fill(libpq, customer_id=customer_id, start=start, end=end, args=args)
            print(
                f"seeded {args.events:,} events, {args.seats} seat and {args.instances} "
                f"instance intervals in {time.perf_counter() - began:.1f} s"
            )
            url = f"/v1/contracts/{contract['id']}/invoice-preview"
            period = start.strftime("%Y-%m")
            params = {"period": period}
            if args.boundaries:
                params["as_of"] = datetime.now(UTC).replace(microsecond=0).isoformat()
            first = await client.get(url, params=params)
            assert first.status_code == 200, first.text
            timings = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                response = await client.get(url, params=params)
                timings.append((time.perf_counter() - t0) * 1000)
                assert response.json()["lines"] == first.json()["lines"]
            timings.sort()
            p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
            print(
                f"invoice preview, {period}: min {timings[0]:.1f} ms, "
                f"p50 {statistics.median(timings):.1f} ms, p99 {p99:.1f} ms, "
                f"max {timings[-1]:.1f} ms over {args.runs} runs"
            )
            for line in first.json()["lines"]:
                print(
                    f"  {line['code']:<18} {line['quantity']:>14} "
                    f"{line['unit']:<24} {line['amount']:>12}"
                )
                if line["code"].startswith("meter:"):
                    print(
                        f"    {line['source']['start']} – {line['source']['end']}: "
                        f"{line['source']['total']} from {line['source']['events']} events"
                    )
            print(f"  subtotal {first.json()['subtotal']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seats", type=int, default=500)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--boundaries", action="store_true", help="odd boundaries, late events")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
