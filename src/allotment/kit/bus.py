"""The invalidation bus: after-commit broadcasts over Redis pub/sub to every worker.

A publisher calls `await bus.publish(topic, payload)` from an `after_commit` hook. Handlers
registered for the topic run at once in this process (so the same worker reflects the write
before the response leaves) and, through Redis, in every other worker: the message is sent
in the background, batched with the others published meanwhile (`flush()` waits for it).
Redis is a bus here, never a store: a message lost while Redis is down is covered by each
cache's own short TTL, and `on_reconnect` handlers run when the subscription comes back so
caches can re-check.

With a `Journal`, the messages of its topics are also appended to a Redis stream in the same
MULTI as their PUBLISH (so every process sees them in one order, with ids a client can resume
from: the change stream, stream/hub.py). Messages that could not be sent leave a gap: the
next send that succeeds journals a `RESYNC_TOPIC` marker before anything else, which tells
readers that something may be missing before it.

On a Redis Cluster (docs/scale-out.md) the channel is a shard channel when the server is
Redis 7 or later: SPUBLISH in the journal's MULTI (kit/keyspace.py puts the channel, the
journal and its epoch in one slot), SSUBSCRIBE on the master that owns that slot, found
anew at each (re)connection, so after a failover the listener follows the slot to the
promoted replica. On an older cluster the channel is a plain one: PUBLISH reaches every
node, and the listener subscribes on that same master.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

log = structlog.get_logger("allotment.bus")

Handler = Callable[[str], Awaitable[None] | None]
# A handler that also gets the message's `data` (None when it carried none).
DataHandler = Callable[[str, Mapping[str, Any] | None], Awaitable[None] | None]
ReconnectHandler = Callable[[], Awaitable[None] | None]

PUBLISH_ATTEMPTS = 3  # connection errors only: a refused connect fails in well under 1 ms
RESYNC_TOPIC = "journal.resync"  # a journal marker: messages may be missing before it
# What a listener dispatches: messages, not the (un)subscribe confirmations.
_MESSAGES = frozenset({"message", "smessage"})


@dataclass(frozen=True)
class Journal:
    """Where a bus journals the messages of `topics`: the Redis stream `key`, trimmed to about
    `maxlen` entries (approximate trimming: cheap, and never below `maxlen`). `epoch_key`
    holds a random token that the first send after Redis lost its data creates (SET NX), so
    a reader can tell a journal that started over from one that went on."""

    key: str
    epoch_key: str
    topics: frozenset[str]
    maxlen: int

    def new_epoch(self) -> str:
        return secrets.token_hex(4)


async def _call(fn: Callable[..., Awaitable[None] | None], *args: Any) -> None:
    try:
        result = fn(*args)
        if result is not None:
            await result
    except Exception:
        log.exception("bus_handler_failed")


class Bus:
    def __init__(
        self, redis: Redis | RedisCluster, *, channel: str, journal: Journal | None = None
    ) -> None:
        self.redis = redis
        self.cluster = isinstance(redis, RedisCluster)
        # A shard channel (SPUBLISH/SSUBSCRIBE): a Redis Cluster of Redis 7 or later, found
        # when the listener connects (or, in a process that only publishes, before its
        # first send).
        self.sharded = False
        self._probed = False
        self.channel = channel
        self.journal = journal
        self.origin = f"{os.getpid()}-{id(self)}"
        self.connected = False
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._data_handlers: dict[str, list[DataHandler]] = defaultdict(list)
        self._on_reconnect: list[ReconnectHandler] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._outbox: list[tuple[str, bytes]] = []
        self._sender: asyncio.Task[None] | None = None
        # Journaled messages were lost (Redis unreachable): the next send that succeeds
        # journals a marker first.
        self.gap = False
        self._marker = orjson.dumps({"t": RESYNC_TOPIC, "o": self.origin})

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers[topic].append(handler)

    def subscribe_data(self, topic: str, handler: DataHandler) -> None:
        """Like `subscribe`, for a handler that also reads the message's `data`."""
        self._data_handlers[topic].append(handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        self._on_reconnect.append(handler)

    async def publish(
        self, topic: str, payload: str, *, data: Mapping[str, Any] | None = None
    ) -> None:
        """Run this process's handlers now; send the message to the other workers in the
        background, in one pipeline with whatever else is published meanwhile (at a
        thousand seat assignments a second, one round trip to Redis per write was a tenth
        of the worker's CPU). `data` rides along for the journal's readers and the
        `subscribe_data` handlers; `subscribe` handlers get `payload` only."""
        await self._run_handlers(topic, payload, data)
        message: dict[str, Any] = {"t": topic, "p": payload, "o": self.origin}
        if data is not None:
            message["d"] = data
        self._outbox.append((topic, orjson.dumps(message)))
        self._start_sender()

    def _start_sender(self) -> None:
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def flush(self) -> None:
        """Wait until every message published so far has been handed to Redis (or given up)."""
        while self._sender is not None:
            await asyncio.wait({self._sender})

    async def _send(self) -> None:
        try:
            marker_only = self.gap  # started to write the marker (on reconnect)
            while self._outbox or marker_only:
                marker_only = False
                batch, self._outbox = self._outbox, []
                await self._send_batch(batch)
        finally:
            self._sender = None

    async def _send_batch(self, batch: list[tuple[str, bytes]]) -> None:
        journal = self.journal
        journaled = journal is not None and (
            self.gap or any(topic in journal.topics for topic, _ in batch)
        )
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                if self.cluster and not self._probed:
                    await self._probe()
                # With journal entries: one MULTI, so a batch is journaled whole or not at
                # all, and a retry cannot journal a message twice.
                async with self.redis.pipeline(transaction=journaled) as pipe:
                    if journal is not None and journaled:
                        pipe.set(journal.epoch_key, journal.new_epoch(), nx=True)
                        if self.gap:
                            self._journal(pipe, journal, self._marker)
                    for topic, message in batch:
                        if self.sharded:
                            pipe.spublish(self.channel, message)
                        elif not self.cluster:
                            pipe.publish(self.channel, message)
                        if journal is not None and topic in journal.topics:
                            self._journal(pipe, journal, message)
                    await pipe.execute()
                if self.cluster and not self.sharded:
                    await self._publish_plain(batch)
                if journaled:
                    self.gap = False
                return
            except RedisConnectionError as exc:
                # After a Redis restart each pooled connection from before it fails once
                # ("Connection closed by server") and is reset; redis-py does not retry, and
                # the other workers' buses may be back already (long TTL), so losing these
                # messages would leave them stale. Retry on a fresh connection.
                if attempt == PUBLISH_ATTEMPTS:
                    log.warning("bus_publish_failed", messages=len(batch), error=str(exc))
            except Exception as exc:  # other workers fall back to their caches' short TTL
                log.warning("bus_publish_failed", messages=len(batch), error=str(exc))
                break
        if journaled:
            self.gap = True

    async def _publish_plain(self, batch: list[tuple[str, bytes]]) -> None:
        """A cluster older than Redis 7: PUBLISH has no slot, so it cannot join the journal's
        MULTI (nor a cluster pipeline); any node takes it and the cluster broadcasts it."""
        for _topic, message in batch:
            await self.redis.publish(self.channel, message)

    @staticmethod
    def _journal(pipe: Any, journal: Journal, message: bytes) -> None:
        pipe.xadd(journal.key, {"m": message}, maxlen=journal.maxlen, approximate=True)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="allotment-bus")

    async def stop(self) -> None:
        # redis-py can swallow a cancellation inside get_message(), so the loop also
        # watches a flag, and stop() waits a bounded time rather than forever.
        self._stopping = True
        with contextlib.suppress(Exception):  # what was published still goes out
            await asyncio.wait_for(self.flush(), timeout=2.0)
        if self._task:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)
            self._task = None

    async def _listen(self) -> None:
        delay = 0.1
        first = True
        pubsub = None
        while not self._stopping:
            pubsub = None
            try:
                pubsub = await self._subscribe()
                self.connected = True
                delay = 0.1
                if not first:
                    log.info("bus_reconnected")
                    for handler in self._on_reconnect:
                        await _call(handler)
                first = False
                if self.gap:  # journal the marker now, not at the next change
                    self._start_sender()
                while not self._stopping:
                    message = await pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "sunsubscribe":  # the slot left this node: follow it
                        raise RedisConnectionError("shard channel unsubscribed")
                    if kind in _MESSAGES:
                        await self._dispatch(message["data"])
            except asyncio.CancelledError:
                self.connected = False
                await _close(pubsub)
                raise
            except Exception as exc:
                if self._stopping:
                    break
                if self.connected:
                    log.warning("bus_disconnected", error=str(exc))
                self.connected = False
                first = False
                await _close(pubsub)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.connected = False
        await _close(pubsub)

    async def _subscribe(self) -> Any:
        if not isinstance(self.redis, RedisCluster):
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self.channel)
            return pubsub
        node = await self._probe()
        kwargs = node.connection_kwargs
        pubsub = Redis(
            host=node.host,
            port=int(node.port),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            socket_timeout=kwargs.get("socket_timeout"),
            socket_connect_timeout=kwargs.get("socket_connect_timeout"),
            # No reconnect to this node: after a failover the slot is elsewhere.
            retry=Retry(NoBackoff(), 0),
        ).pubsub()  # sees the server's SUNSUBSCRIBE when the slot moves
        if self.sharded:
            await pubsub.ssubscribe(self.channel)
        else:
            await pubsub.subscribe(self.channel)
        return pubsub

    async def _probe(self) -> Any:
        """The master of the channel's slot, from the slot map read anew (after a failover
        the slot has a new master), and whether it takes shard channels (Redis 7+)."""
        cluster = self.redis
        assert isinstance(cluster, RedisCluster)
        await cluster.initialize()
        await cluster.nodes_manager.initialize()
        node = cluster.get_node_from_key(self.channel)
        if node is None:
            raise RedisConnectionError("no master holds the channel's slot")
        server = await cluster.info("server", target_nodes=node)
        self.sharded = int(str(server["redis_version"]).split(".")[0]) >= 7
        self._probed = True
        return node

    async def _dispatch(self, raw: bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if message.get("o") == self.origin:
            return  # already handled locally when published
        await self._run_handlers(message.get("t", ""), message.get("p", ""), message.get("d"))

    async def _run_handlers(self, topic: str, payload: str, data: Mapping[str, Any] | None) -> None:
        for handler in self._handlers.get(topic, ()):
            await _call(handler, payload)
        for with_data in self._data_handlers.get(topic, ()):
            await _call(with_data, payload, data)


async def _close(pubsub: object) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()  # type: ignore[attr-defined]
