"""The customers, the load and the sampler every fault test runs, and small probes.

write customers   w0 w1 w2: seats, instances, events and consumes land on them; their
                  contracts (team plan) cap member seats at SEAT_LIMIT + the plan's burst
                  of 2, and instance weight at INSTANCE_LIMIT
read customers    r0 r1: only ever checked, so what a cache holds for them never changes
probe customer    the test's own writes and checks, outside the load
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.faults.cluster import Cluster
from tests.faults.load import Load, Sampler

WRITE = ["w0", "w1", "w2"]
READ = ["r0", "r1"]
PROBE = "probe"
SEAT_LIMIT = 6
BURST_EXTRA = 2  # the team plan's
INSTANCE_LIMIT = 6
RELEASE_AT = SEAT_LIMIT + BURST_EXTRA + 1  # i.e. release the oldest seat only when refused


@dataclass
class Running:
    cluster: Cluster
    load: Load
    sampler: Sampler

    async def finish(self) -> None:
        """Stop the load (every request in progress finishes its retries), then the sampler."""
        await self.load.stop()
        await self.sampler.stop()


@asynccontextmanager
async def running_load(cluster: Cluster) -> AsyncIterator[Running]:
    terms = {"seats": {"limit": SEAT_LIMIT}, "instances": {"limit": INSTANCE_LIMIT}}
    customers: dict[str, dict[str, Any]] = {key: terms for key in [*WRITE, *READ]}
    customers[PROBE] = {"seats": {"limit": 100}}  # room for every probe seat a test makes
    await cluster.setup(customers=customers)
    sampler = Sampler(
        cluster.libpq_url, WRITE, seat_cap=SEAT_LIMIT + BURST_EXTRA, instance_cap=INSTANCE_LIMIT
    )
    load = Load(
        cluster.urls,
        cluster.backend,
        write_customers=WRITE,
        read_customers=READ,
        prefix=f"f{uuid.uuid4().hex[:6]}",
        release_at=RELEASE_AT,
    )
    async with load:
        sampler.start()
        load.start()
        try:
            yield Running(cluster, load, sampler)
        finally:
            if sampler._task is not None and not sampler._task.done():
                await sampler.stop()


async def warmed(load: Load, within: float = 30.0) -> None:
    """Until every kind of request has been answered a few times."""
    ledger = load.ledger

    def ready() -> bool:
        checks = sum(1 for r in ledger.records if r.kind == "check" and r.status == 200)
        return (
            checks >= 150
            and len(ledger.seats) >= 3
            and len(ledger.instances) >= 1
            and len(ledger.events_acked) >= 20
            and len(ledger.consumed) >= 2
        )

    await load.until(ready, within=within)


async def progressed(load: Load, since: float, *, writes: int, within: float = 30.0) -> None:
    """Until at least `writes` write attempts completed after `since`."""
    kinds = ("seat", "release", "instance", "heartbeat", "deregister", "events", "consume")
    await load.until(lambda: load.attempts_in(kinds, since) >= writes, within=within)


async def at_least(seconds: float, since: float) -> None:
    """Let the load run until `seconds` have passed since `since` (a fault's duration)."""
    await asyncio.sleep(max(0.0, since + seconds - time.perf_counter()))


async def decide(
    http: httpx.AsyncClient, customer: str, feature: str, **fields: Any
) -> dict[str, Any]:
    response = await http.post(
        "/v1/check", json={"customer": customer, "feature": feature, **fields}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
