"""The hub's fan-out and the journal's entries, in memory: what a slow client costs the others
(nothing), what it gets instead (a resync, its backlog dropped), and how entries read."""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from allotment.invalidation import CUSTOMER_TOPIC, POLICY_TOPIC
from allotment.kit.bus import RESYNC_TOPIC, Journal
from allotment.stream import events, ids
from allotment.stream.hub import Hub, Item, entry_item

EPOCH = "0123456789abcdef"


def _entry(topic: str, payload: str, data: dict[str, Any] | None = None) -> dict[bytes, bytes]:
    message: dict[str, Any] = {"t": topic, "p": payload, "o": "elsewhere"}
    if data is not None:
        message["d"] = data
    return {b"m": orjson.dumps(message)}


def _changed(n: int, customer: str = "acme") -> Item:
    item = entry_item(
        EPOCH,
        (1000 + n, 0),
        _entry(CUSTOMER_TOPIC, f"{customer} {time.time()}", {"customer": customer}),
    )
    assert item is not None
    return item


async def test_a_slow_client_gets_a_resync_and_never_holds_up_the_others(stores: Any) -> None:
    redis = Redis.from_url(stores.redis_url)
    journal = Journal(key="unused", epoch_key="unused:epoch", topics=frozenset(), maxlen=100)
    hub = Hub(redis=redis, reader=redis, journal=journal, client_queue=5)
    try:
        slow, fast, other = hub.register(None), hub.register(None), hub.register("globex")
        for n in range(1, 51):
            hub._fan_out(_changed(n))
            fast.items.clear()  # this one keeps up
        assert fast.items == type(fast.items)()  # it was handed every one, at once
        assert list(other.items) == []  # acme's changes are not globex's
        # The slow one: its backlog dropped at each overflow, for a resync at the position of
        # the first event it could not take (it refetches; what follows, follows).
        kinds = [(item.event, item.reason) for item in slow.items]
        assert kinds[0] == (events.RESYNC, "overflow")
        assert all(kind == (events.CUSTOMER_CHANGED, None) for kind in kinds[1:])
        assert len(slow.items) <= 5
        positions = [item.position for item in slow.items]
        assert positions == sorted(positions) and positions[-1] == (1050, 0)
        first = slow.items[0]
        assert first.frame.startswith(f"id: {ids.event_id(EPOCH, first.position)}\n".encode())
        for client in (slow, fast, other):
            hub.unregister(client)
        assert hub.clients == set()
    finally:
        await redis.aclose()


def test_entries_read_as_events() -> None:
    at = (1764742321123, 4)
    committed = 1764742321.5
    policy = entry_item(
        EPOCH,
        at,
        _entry(POLICY_TOPIC, f"12 {committed:.6f}", {"version": 3, "rollback": True}),
    )
    assert policy is not None and policy.customer is None
    assert policy.frame == (
        f"id: {EPOCH}:1764742321123-4\nevent: policy.published\n".encode()
        + b'data: {"version":3,"rollback":true,"committed_at":"2025-12-03T06:12:01.500000Z"}\n\n'
    )
    marker = entry_item(EPOCH, at, {b"m": orjson.dumps({"t": RESYNC_TOPIC, "o": "x"})})
    assert marker is not None and (marker.event, marker.reason) == ("resync", "gap")
    # A message from a version that did not send data yet: the customer from the payload.
    old = entry_item(EPOCH, at, _entry(CUSTOMER_TOPIC, f"acme {committed}"))
    assert old is not None and old.customer == "acme"
    assert b'"state_version":null' in old.frame
    # Not the stream's, or unreadable: skipped.
    assert entry_item(EPOCH, at, _entry("api_key_revoked", "key_1")) is None
    assert entry_item(EPOCH, at, {b"m": b"{not json"}) is None
    assert entry_item(EPOCH, at, {}) is None


def test_event_ids_round_trip_and_refuse_what_was_never_sent() -> None:
    assert ids.parse(ids.event_id(EPOCH, (5, 6))) == (EPOCH, (5, 6))
    for bad in ("", "5-6", f"{EPOCH}:5", f"{EPOCH}:x-1", "EPOCH:5-6", f"{EPOCH}:5-6-7",
                f"{EPOCH}:{2**64}-0", f"{'a' * 65}:5-6"):  # fmt: skip
        assert ids.parse(bad) is None, bad
