"""track(): buffered, sent in batches with their ids, spooled while the service cannot be
reached, and counted exactly once (verified in PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from tests.check.servers import free_port

from allotment_client import Allotment, AsyncAllotment, RetryPolicy
from allotment_client.spool import Spool
from conftest import Service

COUNTED = (
    "SELECT coalesce(sum(c.value), 0) FROM usage_counters c JOIN customers k "
    "ON k.id = c.customer_id WHERE k.key = :customer AND c.meter = 'api_calls'"
)
IDS = "SELECT count(*) FROM usage_event_ids WHERE source = :source"


async def test_tracked_events_are_delivered_in_batches_and_counted_once(service: Service) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"sdk-{uuid.uuid4().hex[:8]}"

    def scenario() -> list[str]:
        with Allotment(service.url, service.key, source=source, spool=False, batch_size=400) as sdk:
            ids = [sdk.track("api.call", customer, {"count": 2}) for _ in range(1000)]
            assert sdk.flush(30)
            queue = sdk._tracker.queue if sdk._tracker else None
            assert queue is not None and queue.sent == 1000 and not queue.refused
            sdk.track("no.such.meter", customer, {"n": 1})  # accepted, counts nowhere
            sdk.track("api.call", "c-nobody", {"count": 1})  # refused: unknown customer
            assert sdk.flush(30)
            assert [e["subject"] for e, _ in queue.refused] == ["c-nobody"]
            return ids

    ids = await asyncio.to_thread(scenario)
    assert len(set(ids)) == 1000
    assert await service.scalar(IDS, source=source) == 1001
    assert await service.scalar(COUNTED, customer=customer) == 2000

    # The same events again (a retry whose first answer was lost): duplicates, not counts.
    async with AsyncAllotment(service.url, service.key, spool=False) as sdk:
        events = [
            {
                "specversion": "1.0",
                "id": i,
                "source": source,
                "type": "api.call",
                "subject": customer,
                "data": {"count": 2},
            }
            for i in ids[:10]
        ]
        answer = await sdk.send_events(events)
    assert answer["duplicates"] + len(answer["conflicts"]) == 10 and answer["accepted"] == 0
    assert await service.scalar(COUNTED, customer=customer) == 2000


async def test_events_spooled_while_unreachable_are_delivered_once_when_it_is_back(
    service: Service, tmp_path: Path
) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"sdk-{uuid.uuid4().hex[:8]}"
    nowhere = f"http://127.0.0.1:{free_port()}"
    quick = RetryPolicy(attempts=2, backoff=0.01)

    def offline() -> None:
        with Allotment(
            nowhere, service.key, source=source, spool=tmp_path, retry=quick, flush_interval=0.05
        ) as sdk:
            for _ in range(300):
                sdk.track("api.call", customer, {"count": 1})
            assert not sdk.flush(1.0)
        # Closed: what could not be delivered is on disk.

    await asyncio.to_thread(offline)
    spool = Spool(tmp_path)
    pending = spool.pending()
    spool.close()
    assert len(pending) == 300
    assert await service.scalar(IDS, source=source) == 0

    # Some of them reached the service another way before (as if an answer had been lost).
    async with AsyncAllotment(service.url, service.key, spool=False) as sdk:
        await sdk.send_events(pending[:120])

    async with AsyncAllotment(
        service.url, service.key, source=source, spool=tmp_path, flush_interval=0.05
    ) as sdk:
        assert await sdk.flush(30)  # what the last process left
        sdk.track("api.call", customer, {"count": 1})
        assert await sdk.flush(30)
    assert await service.scalar(IDS, source=source) == 301
    assert await service.scalar(COUNTED, customer=customer) == 301
    spool = Spool(tmp_path)
    assert len(spool) == 0
    spool.close()


async def test_large_events_are_sent_in_batches_the_service_takes_and_one_too_large_is_refused(
    service: Service, tmp_path: Path
) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"sdk-{uuid.uuid4().hex[:8]}"
    pad = "x" * 200_000
    async with AsyncAllotment(
        service.url, service.key, source=source, spool=tmp_path / "spool", flush_interval=0.05
    ) as sdk:
        for _ in range(6):  # 1.2 MB in all: one batch would be refused (413)
            sdk.track("api.call", customer, {"count": 1, "pad": pad})
        huge = sdk.track("api.call", customer, {"count": 100, "pad": "y" * 1_200_000})
        after = [sdk.track("api.call", customer, {"count": 1}) for _ in range(3)]
        assert await sdk.flush(60)
        queue = sdk._tracker.queue if sdk._tracker else None
        assert queue is not None and queue.refused_total == 1
        assert [event["id"] for event, _ in queue.refused] == [huge]
    assert await service.scalar(IDS, source=source) == 9
    assert await service.scalar(COUNTED, customer=customer) == 9
    assert len(after) == 3
