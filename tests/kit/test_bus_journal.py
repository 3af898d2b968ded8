"""The bus's journal over a real redis-server that is killed and started again (empty): the
journaled topics go to the stream with their PUBLISH; messages that could not be sent leave
a gap, which the next send that succeeds — or the subscription coming back, whichever is
first — journals as a marker before anything else; a Redis that lost its data gets a new
epoch token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from allotment.kit.bus import RESYNC_TOPIC, Bus, Journal
from tests.check.servers import RedisServer, eventually

JOURNAL = Journal(key="j", epoch_key="j:epoch", topics=frozenset({"changes"}), maxlen=1000)


async def _journal(redis: Redis) -> list[dict[str, Any]]:
    return [orjson.loads(fields[b"m"]) for _, fields in await redis.xrange(JOURNAL.key)]


async def test_a_lost_send_is_journaled_as_a_marker_when_redis_returns(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    redis = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    reader = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    bus = Bus(redis, channel="ch", journal=JOURNAL)
    try:
        await bus.start()

        async def connected() -> bool:
            return bus.connected

        await eventually(connected, within=10)
        await bus.publish("changes", "one", data={"n": 1})
        await bus.publish("revoked", "key")  # published, not journaled
        await bus.flush()
        assert [(m["t"], m["p"], m["d"]) for m in await _journal(reader)] == [
            ("changes", "one", {"n": 1})
        ]
        epoch = await reader.get(JOURNAL.epoch_key)
        assert epoch

        server.kill()
        await bus.publish("changes", "lost")
        await bus.flush()
        assert bus.gap

        server.start()  # empty: no journal, no epoch

        async def marked() -> list[dict[str, Any]]:
            try:
                return await _journal(reader)
            except Exception:
                return []

        # The subscription came back: the marker is journaled without waiting for a change.
        journal, _ = await eventually(marked, within=15)
        assert [m["t"] for m in journal] == [RESYNC_TOPIC]
        assert not bus.gap
        assert await reader.get(JOURNAL.epoch_key) not in (None, epoch)

        await bus.publish("changes", "two")
        await bus.flush()
        assert [(m["t"], m.get("p")) for m in await _journal(reader)] == [
            (RESYNC_TOPIC, None),
            ("changes", "two"),
        ]
    finally:
        await bus.stop()
        await redis.aclose()
        await reader.aclose()
        server.kill()
        await asyncio.sleep(0)
