"""The invalidation bus: after-commit broadcasts over Redis pub/sub to every worker.

A publisher calls `await bus.publish(topic, payload)` from an `after_commit` hook. Handlers
registered for the topic run at once in this process (so the same worker reflects the write
before the response leaves) and, through Redis, in every other worker: the message is sent
in the background, batched with the others published meanwhile (`flush()` waits for it).
Redis is a bus here, never a store: a message lost while Redis is down is covered by each
cache's own short TTL, and `on_reconnect` handlers run when the subscription comes back so
caches can re-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

log = structlog.get_logger("allotment.bus")

Handler = Callable[[str], Awaitable[None] | None]
ReconnectHandler = Callable[[], Awaitable[None] | None]

PUBLISH_ATTEMPTS = 3  # connection errors only: a refused connect fails in well under 1 ms


async def _call(fn: Callable[..., Awaitable[None] | None], *args: str) -> None:
    try:
        result = fn(*args)
        if result is not None:
            await result
    except Exception:
        log.exception("bus_handler_failed")


class Bus:
    def __init__(self, redis: Redis, *, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self.origin = f"{os.getpid()}-{id(self)}"
        self.connected = False
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._on_reconnect: list[ReconnectHandler] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._outbox: list[bytes] = []
        self._sender: asyncio.Task[None] | None = None

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers[topic].append(handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        self._on_reconnect.append(handler)

    async def publish(self, topic: str, payload: str) -> None:
        """Run this process's handlers now; send the message to the other workers in the
        background, in one pipeline with whatever else is published meanwhile (at a
        thousand seat assignments a second, one round trip to Redis per write was a tenth
        of the worker's CPU)."""
        for handler in self._handlers.get(topic, ()):
            await _call(handler, payload)
        self._outbox.append(orjson.dumps({"t": topic, "p": payload, "o": self.origin}))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def flush(self) -> None:
        """Wait until every message published so far has been handed to Redis (or given up)."""
        while self._sender is not None:
            await asyncio.wait({self._sender})

    async def _send(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                await self._send_batch(batch)
        finally:
            self._sender = None

    async def _send_batch(self, batch: list[bytes]) -> None:
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for message in batch:
                        pipe.publish(self.channel, message)
                    await pipe.execute()
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
                return

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
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.connected = True
                delay = 0.1
                if not first:
                    log.info("bus_reconnected")
                    for handler in self._on_reconnect:
                        await _call(handler)
                first = False
                while not self._stopping:
                    message = await pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
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

    async def _dispatch(self, raw: bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if message.get("o") == self.origin:
            return  # already handled locally when published
        for handler in self._handlers.get(message.get("t", ""), ()):
            await _call(handler, message.get("p", ""))


async def _close(pubsub: object) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()  # type: ignore[attr-defined]
