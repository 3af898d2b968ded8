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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from allotment.check.snapshot import SnapshotCache
from allotment.config import Settings
from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.usage import service
from allotment.usage.broker import CONSUMER, RECEIVED, connect, ensure_stream, subject
from allotment.usage.events import Window

log = structlog.get_logger("allotment.aggregator")

ACTOR = "system:aggregator"
RETRY_S = 1.0  # a failed batch comes back after this long


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

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: fetch, ingest, acknowledge."""
        client = await connect(self.settings, name="allotment-aggregator")
        try:
            js = client.jetstream(timeout=self.settings.events_publish_timeout_s)
            while True:  # the cluster may still be electing its stream's leader
                try:
                    await ensure_stream(js, self.settings)
                    subscription = await js.pull_subscribe(
                        subject(self.settings),
                        durable=CONSUMER,
                        stream=self.settings.events_stream,
                    )
                    break
                except Exception as exc:
                    log.warning("aggregator_waiting", error=str(exc) or type(exc).__name__)
                    if stop.is_set():
                        return
                    await asyncio.sleep(RETRY_S)
            log.info("aggregator_started")
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(
                        self.settings.aggregator_batch, timeout=self.settings.aggregator_wait_s
                    )
                except (NatsTimeout, TimeoutError):
                    continue
                except Exception as exc:  # a node down, a reconnect: fetch again
                    log.warning("aggregator_fetch_failed", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(0.1)
                    continue
                await self.handle(messages)
        finally:
            with contextlib.suppress(Exception):  # the last acks go out, then the socket
                await client.flush(timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout=2)

    async def handle(self, messages: Sequence[Msg]) -> Done | None:
        """Ingest one fetched batch and acknowledge it after the commit (None: it failed,
        and comes back)."""
        try:
            done = await self.ingest(messages)
        except Exception as exc:
            log.warning("aggregator_batch_failed", messages=len(messages), error=str(exc))
            for msg in messages:
                with contextlib.suppress(Exception):
                    await msg.nak(delay=RETRY_S)
            return None
        for msg in messages:
            with contextlib.suppress(Exception):  # lost: redelivered, then a duplicate
                await msg.ack()
        return done

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
