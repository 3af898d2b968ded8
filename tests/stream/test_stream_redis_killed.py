"""Redis SIGKILLed under open streams and started again, empty (tests/faults/cluster.py: a
Redis, a PostgreSQL and two workers of the test's own). Nothing in the journal can say what
the streams missed meanwhile (a change was even committed during the outage), so every
connected client gets `resync` once Redis is back, then live events again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from allotment.stream import ids
from tests.faults.cluster import Cluster
from tests.stream.support import Listener, amend

OUTAGE_S = 2.0
BACK_WITHIN_S = 20.0


async def test_streams_resync_after_redis_returns_and_then_go_on_live(tmp_path: Path) -> None:
    cluster = await Cluster.start(tmp_path / "cluster")
    try:
        await cluster.setup(customers={"acme": {}})
        async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
            found = await http.get("/v1/customers/acme/contracts", headers=cluster.admin)
            contract = found.json()["items"][0]
            urls = [f"{url}/v1/stream" for url in cluster.urls]
            async with (
                Listener(urls[0], cluster.backend) as s0,
                Listener(urls[1], cluster.backend) as s1,
            ):
                contract = await amend(http, cluster.admin, contract, 12)
                for stream in (s0, s1):
                    await stream.next("customer.changed", customer="acme")
                before = [len(s0.events), len(s1.events)]
                epoch = ids.parse(s0.events[-1].id)

                cluster.kill_redis()
                await asyncio.sleep(OUTAGE_S / 2)
                contract = await amend(http, cluster.admin, contract, 13)  # PostgreSQL is up
                await asyncio.sleep(OUTAGE_S / 2)
                cluster.start_redis()

                resyncs = []
                for stream, seen in zip((s0, s1), before, strict=True):
                    resync = await stream.next("resync", after=seen, within=BACK_WITHIN_S)
                    resyncs.append(resync)
                    assert resync.json()["reason"] in ("reconnected", "gap"), stream.summary()
                    parsed = ids.parse(resync.id)
                    assert parsed is not None and epoch is not None
                    assert parsed[0] != epoch[0]  # a Redis that lost its data: a new epoch

                # Live again, on both workers, for a change made through either.
                seen_now = [len(s0.events), len(s1.events)]
                await amend(http, cluster.admin, contract, 14)
                for stream, seen in zip((s0, s1), seen_now, strict=True):
                    await stream.next("customer.changed", after=seen, customer="acme")
        assert cluster.trouble() == []
    finally:
        cluster.close()
