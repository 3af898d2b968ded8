"""`allotment aggregator`: events from JetStream into PostgreSQL, exactly once.

    1  fetch up to ALLOTMENT_AGGREGATOR_BATCH messages from the durable pull consumer every
       aggregator shares (JetStream hands each message to one of them at a time)
    2  ingest them in ONE transaction through service.ingest, as POST /v1/events does
       without a broker: the (source, id) claim in `usage_event_ids` is the last word, so a
       message delivered twice (an aggregator killed after its commit, before its acks) is a
       duplicate there and moves no counter
    3  after the commit, acknowledge every message of the batch; a batch that fails (the
       database unreachable) is acknowledged negatively and comes back after a second

An aggregator killed mid-batch never acknowledged it: after ALLOTMENT_AGGREGATOR_ACK_WAIT_S
JetStream hands the messages to another one. The window an event is checked against is the
API's, widened by how long it waited in the stream: the API took it, so the aggregator
never rejects it for having waited (docs/scale-out.md, "NATS JetStream").

Poison messages. A batch that fails for a reason that will not pass (PostgreSQL refuses a
value: a NUL published before the API refused them) or that failed MAX_ATTEMPTS times is
split in halves, each written on its own, down to the messages that fail alone: those are
published to `<stream>.dead` with the error in a header, logged (`aggregator_dead_letter`,
with source and id) and terminated, so one bad message never holds the good ones back. A
batch that failed because PostgreSQL is unreachable only waits: it is never set aside.

Stopping (SIGTERM, SIGINT): at once while connecting or waiting; a batch being written gets
up to STOP_GRACE_S to commit and acknowledge, then is abandoned (redelivered later).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from allotment.check.snapshot import SnapshotCache, StoreUnavailable
from allotment.config import Settings
from allotment.db import session_scope
from allotment.errors import ServiceUnavailable, ValidationFailed
from allotment.kit.background import cancel
from allotment.kit.clock import utcnow
from allotment.usage import service
from allotment.usage.broker import (
    CONSUMER,
    RECEIVED,
    Reporter,
    connect,
    dead_subject,
    describe,
    ensure_stream,
    redacted,
    subject,
)
from allotment.usage.events import Window

log = structlog.get_logger("allotment.aggregator")

T = TypeVar("T")

ACTOR = "system:aggregator"
RETRY_S = 1.0  # a failed batch comes back after this long
MAX_ATTEMPTS = 5  # deliveries of a failing batch's message before it is looked at alone
STOP_GRACE_S = 5.0  # a batch being written when told to stop may finish within this
ERROR = "Allotment-Error"  # a dead letter's header: why it could not be written
# The batch may succeed later as it is: the database unreachable or overloaded.
_TRANSIENT = (ServiceUnavailable, StoreUnavailable)
# It never will: the database refuses a value in it (a NUL).
_FINAL = (ValidationFailed,)


@dataclass
class Done:
    """What one batch did."""

    messages: int
    accepted: int
    duplicates: int
    dropped: int  # rejected now (a customer deleted since) or conflicting: logged


def _received(msg: Msg, now: datetime) -> datetime:
    found = (msg.headers or {}).get(RECEIVED)
    if found:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(found)
    return now


def _deliveries(messages: Sequence[Msg]) -> int:
    """How many times the batch's most delivered message was delivered (1: first time)."""
    found = 1
    for msg in messages:
        with contextlib.suppress(Exception):  # not a JetStream message: once
            found = max(found, msg.metadata.num_delivered or 1)
    return found


def _body(msg: Msg) -> Any:
    try:
        return orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return None  # not an event: rejected by service.ingest, logged, acknowledged


class Aggregator:
    def __init__(
        self,
        settings: Settings,
        *,
        maker: async_sessionmaker[AsyncSession],
        engine: AsyncEngine,
        snapshots: SnapshotCache,
    ) -> None:
        self.settings = settings
        self.maker = maker
        self.engine = engine
        self.snapshots = snapshots
        self.url = redacted(settings.events_broker or "")
        self.client: Client | None = None
        self.js: JetStreamContext | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: fetch, ingest, acknowledge. Returns promptly once it is set,
        whatever the state (module docstring, "Stopping")."""
        body = asyncio.create_task(self._run(stop), name="allotment-aggregator")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({body, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not body.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(body), STOP_GRACE_S)
            if not body.done():
                log.warning("aggregator_batch_abandoned", broker=self.url)
            await cancel(body)  # raises what made it fail, if anything did
        finally:
            await cancel(stopping)
            if not body.done():
                await cancel(body)
            client = self.client
            if client is not None:
                with contextlib.suppress(Exception):  # the last acks go out, then the socket
                    await client.flush(timeout=2)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), timeout=2)

    async def _unless_stopped(self, stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T | None:
        """`work`'s result, or None as soon as `stop` is set (work cancelled)."""
        task = asyncio.create_task(work)
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel(stopping)
        if not task.done():
            await cancel(task)
            return None
        return task.result()

    async def _run(self, stop: asyncio.Event) -> None:
        errors = Reporter("nats_error", broker=self.url)
        waiting = Reporter("aggregator_waiting", broker=self.url)
        log.info("aggregator_connecting", broker=self.url)
        client = await self._unless_stopped(
            stop, connect(self.settings, name="allotment-aggregator", report=errors.nats_error)
        )
        if client is None:
            return
        self.client = client
        js = self.js = client.jetstream(timeout=self.settings.events_publish_timeout_s)
        subscription = None
        while subscription is None:  # the cluster may still be electing its stream's leader
            try:
                subscription = await self._unless_stopped(stop, self._subscribe(js))
            except Exception as exc:
                waiting(describe(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_S)
            if stop.is_set():
                return
        log.info("aggregator_started", broker=self.url)
        while not stop.is_set():
            try:
                messages = await subscription.fetch(
                    self.settings.aggregator_batch, timeout=self.settings.aggregator_wait_s
                )
            except (NatsTimeout, TimeoutError):
                continue
            except Exception as exc:  # a node down, a reconnect: fetch again
                errors(f"fetch failed: {describe(exc)}")
                await asyncio.sleep(0.1)
                continue
            await self.handle(messages)

    async def _subscribe(self, js: JetStreamContext) -> Any:
        await ensure_stream(js, self.settings)
        return await js.pull_subscribe(
            subject(self.settings), durable=CONSUMER, stream=self.settings.events_stream
        )

    async def handle(self, messages: Sequence[Msg]) -> Done | None:
        """Ingest one fetched batch and acknowledge it after the commit (None: it failed,
        and comes back). A batch that can never be written as it is is split until the
        messages at fault are alone, and those are set aside (module docstring)."""
        try:
            done = await self.ingest(messages)
        except Exception as exc:
            if isinstance(exc, _TRANSIENT) or (
                not isinstance(exc, _FINAL) and _deliveries(messages) < MAX_ATTEMPTS
            ):
                log.warning("aggregator_batch_failed", messages=len(messages), error=str(exc))
                for msg in messages:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=RETRY_S)
                return None
            if len(messages) == 1:
                return await self.set_aside(messages[0], exc)
            half = len(messages) // 2
            first, second = await self.handle(messages[:half]), await self.handle(messages[half:])
            if first is None or second is None:
                return None
            return Done(
                first.messages + second.messages,
                first.accepted + second.accepted,
                first.duplicates + second.duplicates,
                first.dropped + second.dropped,
            )
        for msg in messages:
            with contextlib.suppress(Exception):  # lost: redelivered, then a duplicate
                await msg.ack()
        return done

    async def set_aside(self, msg: Msg, exc: Exception) -> Done | None:
        """A message that cannot be written: published to `<stream>.dead` with the error,
        then terminated (never delivered again). None when the copy could not be made (it
        is then delivered again, and set aside then)."""
        body = _body(msg)
        event = body if isinstance(body, dict) else {}
        error = str(exc) or type(exc).__name__
        headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
        try:
            assert self.js is not None
            await self.js.publish(
                dead_subject(self.settings),
                msg.data,
                timeout=self.settings.events_publish_timeout_s,
                stream=self.settings.events_stream,
                headers={**headers, ERROR: error[:1000]},
            )
            await msg.term()
        except Exception as failed:
            log.warning("aggregator_dead_letter_failed", error=describe(failed))
            with contextlib.suppress(Exception):
                await msg.nak(delay=RETRY_S)
            return None
        log.error(
            "aggregator_dead_letter",
            source=event.get("source"),
            id=event.get("id"),
            subject=dead_subject(self.settings),
            error=error,
        )
        return Done(1, 0, 0, 1)

    async def ingest(self, messages: Sequence[Msg]) -> Done:
        now = utcnow()
        oldest = min((_received(m, now) for m in messages), default=now)
        waited = max(now - oldest, timedelta(0))
        window = Window(
            now=now,
            late=timedelta(seconds=self.settings.events_late_window_s) + waited,
            future=timedelta(seconds=self.settings.events_future_s),
        )

        async def snapshot_of(key: str) -> Any:
            snapshot, _ = await self.snapshots.get(key, now)
            return snapshot

        async with session_scope(self.maker, actor=ACTOR) as session:
            outcome = await service.ingest(
                session,
                raw_events=[_body(m) for m in messages],
                snapshot_of=snapshot_of,
                window=window,
                engine=self.engine,
                actor=ACTOR,
            )
        dropped = len(outcome.rejected) + len(outcome.conflicts)
        if dropped:
            log.warning(
                "aggregator_dropped",
                rejected=outcome.rejected[:10],
                conflicts=outcome.conflicts[:10],
            )
        return Done(len(messages), outcome.accepted, outcome.duplicates, dropped)
