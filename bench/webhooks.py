"""Webhooks: commit → receiver latency, and deliveries per second of one worker.

    .venv/bin/python bench/webhooks.py [--messages 200] [--rate 20] [--burst 2000]

Starts a fresh database (embedded by default, or ALLOTMENT_DATABASE_URL's server; its own
data dir and database), a receiver on 127.0.0.1 that verifies every delivery with the
`standardwebhooks` package (tests/webhooks/receiver.py) and answers 200 at once, one webhook
endpoint, and one `allotment worker` process (default settings but private targets allowed).

Latency: --messages messages, one per transaction, at a steady --rate; latency = the
receiver's arrival time − the time just after the message's commit (same machine, same
clock). Prints p50/p99/max.

Throughput: the worker stopped, --burst messages committed, the worker started; deliveries
per second from the first arrival to the last (the worker's start-up left out).

A benchmark, not a test: timings are reported, not asserted; the exit status is 1 only when
a message was not delivered or a delivery did not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.webhooks.receiver import Receiver  # noqa: E402

from allotment import embedded  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.db import create_engine, create_sessionmaker, session_scope  # noqa: E402
from allotment.migrate import upgrade  # noqa: E402
from allotment.webhooks import catalog, outbox  # noqa: E402
from allotment.webhooks import service as webhooks  # noqa: E402
from allotment.webhooks.schemas import WebhookEndpointCreate  # noqa: E402
from bench.run import BIN, ROOT, fresh_database, pct  # noqa: E402

DATA_DIR = Path(tempfile.gettempdir()) / "allotment-bench-webhooks"
DATABASE = "allotment_bench_webhooks"
SECRET = "bench-signing-secret"


def start_worker(database_url: str, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ALLOTMENT_DATABASE_URL": database_url,
        "ALLOTMENT_REDIS_URL": redis_url,
        "ALLOTMENT_SIGNING_SECRET": SECRET,
        "ALLOTMENT_WEBHOOKS_ALLOW_PRIVATE": "true",
        "ALLOTMENT_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [str(BIN / "allotment"), "worker", "--interval", "60"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_for(receiver: Receiver, ids: set[str], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ids <= set(receiver.ids()):
            return True
        await asyncio.sleep(0.02)
    return False


async def run(args: argparse.Namespace) -> dict[str, Any]:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    servers = embedded.start(
        Settings(
            database_url=os.environ.get("ALLOTMENT_DATABASE_URL") or None,
            redis_url=os.environ.get("ALLOTMENT_REDIS_URL") or None,
            data_dir=DATA_DIR,
        )
    )
    database_url = fresh_database(servers, DATABASE)
    upgrade(database_url)
    settings = Settings(
        database_url=database_url,
        redis_url=servers.redis_url,
        signing_secret=SECRET,  # type: ignore[arg-type]
        webhooks_allow_private=True,
    )
    engine = create_engine(database_url, settings)
    maker = create_sessionmaker(engine)
    receiver = Receiver().start()
    log = DATA_DIR / "worker.log"
    try:
        async with session_scope(maker) as session:
            created = await webhooks.create(
                session,
                data=WebhookEndpointCreate(url=receiver.url),
                settings=settings,
                actor="bench",
            )
        receiver.secrets = [created.secret]
        worker = start_worker(database_url, servers.redis_url, log)
        # The worker's start-up (imports, first pass) is not what is measured: wait until
        # it has delivered a first message.
        async with session_scope(maker) as session:
            warm = await outbox.emit(session, catalog.POLICY_PUBLISHED, {})
        if not await wait_for(receiver, {warm}, within=120):
            raise SystemExit(f"the worker delivered nothing within 120 s; see {log}")

        committed: dict[str, float] = {}
        interval = 1.0 / args.rate
        start = time.perf_counter()
        for i in range(args.messages):
            await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
            async with session_scope(maker) as session:
                msg = await outbox.emit(session, catalog.USAGE_THRESHOLD_REACHED, {"n": i})
            committed[msg] = time.time()
        complete = await wait_for(receiver, set(committed), within=60)
        arrived = {r.id: r.at for r in receiver.received}
        ordered = [arrived[m] - t for m, t in committed.items() if m in arrived]
        latencies = sorted(ordered)

        stop(worker)
        burst: list[str] = []
        async with session_scope(maker) as session:
            for i in range(args.burst):
                burst.append(await outbox.emit(session, catalog.USAGE_SURGE, {"n": i}))
        seen = len(receiver.received)
        worker = start_worker(database_url, servers.redis_url, log)
        burst_complete = await wait_for(receiver, set(burst), within=600)
        times = sorted(r.at for r in receiver.received[seen:] if r.id in set(burst))
        stop(worker)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        verified = all(r.verified_with for r in receiver.received)
        return {
            "messages": args.messages,
            "rate_per_s": args.rate,
            "latency_s": {
                "p50": round(pct(latencies, 0.5), 4),
                "p99": round(pct(latencies, 0.99), 4),
                "max": round(latencies[-1], 4) if latencies else None,
                "first_tenth_p50": round(pct(ordered[: len(ordered) // 10], 0.5), 4),
                "last_tenth_p50": round(pct(ordered[-(len(ordered) // 10) :], 0.5), 4),
            },
            "burst": args.burst,
            "deliveries_per_s_one_worker": round(rate, 1),
            "all_delivered": complete and burst_complete,
            "all_verified": verified,
            "received": len(receiver.received),
            "load_average": os.getloadavg(),
        }
    finally:
        receiver.stop()
        await engine.dispose()
        servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"webhooks-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(result, indent=2)
    )
    sys.exit(0 if result["all_delivered"] and result["all_verified"] else 1)


if __name__ == "__main__":
    main()
