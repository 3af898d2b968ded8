"""The invalidation bus over a real Redis: local handlers at once, other processes through
Redis in batches, every message delivered, in order."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis

from allotment.kit.bus import Bus


async def _started(redis: Redis, channel: str) -> tuple[Bus, list[str]]:
    bus = Bus(redis, channel=channel)
    seen: list[str] = []
    bus.subscribe("t", seen.append)
    await bus.start()
    for _ in range(200):  # until subscribed
        if bus.connected:
            break
        await asyncio.sleep(0.01)
    assert bus.connected
    return bus, seen


async def test_a_burst_of_publishes_reaches_the_other_bus_whole_and_in_order(
    stores: Any,
) -> None:
    redis = Redis.from_url(stores.redis_url)
    channel = f"{stores.namespace}:bus-test:{uuid.uuid4().hex}"
    publisher, local = await _started(redis, channel)
    other, remote = await _started(redis, channel)
    # Handlers that read the data too: every other message carries some.
    local_data: list[tuple[str, Any]] = []
    remote_data: list[tuple[str, Any]] = []
    publisher.subscribe_data("t", lambda payload, data: local_data.append((payload, data)))
    other.subscribe_data("t", lambda payload, data: remote_data.append((payload, data)))
    try:
        sent = [str(n) for n in range(500)]
        with_data = [(p, {"n": int(p)} if int(p) % 2 else None) for p in sent]
        await asyncio.gather(*(publisher.publish("t", p, data=d) for p, d in with_data))
        assert local == sent  # this process's handlers ran before publish returned
        assert local_data == with_data
        await publisher.flush()
        for _ in range(300):
            if len(remote) >= len(sent) and len(remote_data) >= len(sent):
                break
            await asyncio.sleep(0.01)
        assert remote == sent  # nothing lost, nothing twice, nothing reordered
        assert remote_data == with_data
        assert local == sent  # its own messages are not handled a second time
    finally:
        await publisher.stop()
        await other.stop()
        await redis.aclose()


async def test_publishing_with_redis_gone_is_not_an_error(stores: Any) -> None:
    redis = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    bus = Bus(redis, channel="nowhere")
    seen: list[str] = []
    bus.subscribe("t", seen.append)
    await bus.publish("t", "a")  # the local handler still runs; the send fails in the back
    await bus.publish("t", "b")
    await asyncio.wait_for(bus.flush(), timeout=5)
    assert seen == ["a", "b"]
    await redis.aclose()
