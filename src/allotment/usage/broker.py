"""NATS JetStream between ingestion and aggregation (docs/scale-out.md, "NATS JetStream").

    API worker   POST /v1/events screens the batch (service.screen: no writes), publishes
                 the first copy of each valid (source, id) to the stream with
                 `Nats-Msg-Id` = `source/id`, and answers only once JetStream acknowledged
                 every one (a replicated write when the stream has replicas); a failed or
                 late acknowledgement is a 503 and the client sends the batch again
    aggregator   `allotment aggregator` (usage/aggregator.py) fetches large batches from the
                 durable pull consumer all aggregators share, ingests each batch through
                 service.ingest (the database's (source, id) dedupe stays the last word) and
                 acknowledges the messages only after the commit

In an id, `%` and `/` are percent-encoded, so `source/id` names one (source, id): a source
holds slashes (it is a URI), and JetStream drops a message whose id it saw within
`ALLOTMENT_EVENTS_DEDUPE_WINDOW_S` as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats
import orjson
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError
from prometheus_client import Gauge

from allotment.config import Settings
from allotment.kit.background import cancel
from allotment.kit.clock import isoformat
from allotment.usage.events import Window
from allotment.usage.service import Candidate, EventKey, Outcome, SnapshotOf, screen, unmetered

log = structlog.get_logger("allotment.broker")

CONSUMER = "aggregators"  # the durable pull consumer every aggregator shares
RECEIVED = "Allotment-Received"  # when the API took the event (RFC 3339)
MSG_ID = "Nats-Msg-Id"

LAG = Gauge(
    "allotment_events_broker_lag",
    "The aggregators' consumer: events not yet delivered (pending), delivered but not yet "
    "acknowledged (ack_pending), and delivered more than once so far (redelivered)",
    ["state"],
)
LAG_AGE = Gauge(
    "allotment_events_broker_lag_read_age_seconds",
    "Seconds since the consumer's lag was last read (it grows while NATS is unreachable)",
)


class BrokerUnavailable(Exception):
    """JetStream did not acknowledge every event in time: nothing may be answered as taken."""


def servers(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` (or `nats://a:4222,b:4222`) as a list of URLs."""
    found = []
    for part in url.split(","):
        part = part.strip()
        if part:
            found.append(part if "://" in part else f"nats://{part}")
    return found


def subject(settings: Settings) -> str:
    """The stream's one subject, `<stream>.events`: streams of several deployments can share
    a cluster (a subject belongs to one stream)."""
    return f"{settings.events_stream}.events"


def message_id(key: EventKey) -> str:
    source, id_ = key
    return f"{source}/{id_.replace('%', '%25').replace('/', '%2F')}"


async def _report(error: Exception) -> None:
    # One line per error, not the client's default traceback on every reconnect attempt.
    log.warning("nats_error", error=str(error) or type(error).__name__)


async def connect(settings: Settings, *, name: str) -> Client:
    """A client that keeps reconnecting to any of the servers for as long as it lives."""
    assert settings.events_broker is not None
    return await nats.connect(
        error_cb=_report,
        servers=servers(settings.events_broker),
        name=name,
        connect_timeout=2,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """The stream and the aggregators' consumer, created when missing (work-queue retention:
    a message leaves the stream once an aggregator acknowledged it)."""
    try:
        await js.stream_info(settings.events_stream)
    except NotFoundError:
        await js.add_stream(
            api.StreamConfig(
                name=settings.events_stream,
                subjects=[subject(settings)],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                num_replicas=settings.events_stream_replicas,
                duplicate_window=settings.events_dedupe_window_s,
            )
        )
    await js.add_consumer(
        settings.events_stream,
        api.ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=settings.aggregator_ack_wait_s,
            max_ack_pending=-1,
            max_deliver=-1,
            filter_subject=subject(settings),
        ),
    )


@dataclass
class Published:
    """What JetStream answered for one batch."""

    duplicates: set[EventKey]  # ids JetStream already held (within its dedupe window)


class Broker:
    """An API worker's link to JetStream: it connects in the background (the API serves
    while NATS is down; events are then a 503) and reads the consumer's lag for /metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Client | None = None
        self.js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()

    async def _run(self) -> None:
        while self.client is None:
            client: Client | None = None
            try:
                client = await connect(self.settings, name="allotment-api")
                js = client.jetstream(timeout=self.settings.events_publish_timeout_s)
                await ensure_stream(js, self.settings)
            except Exception as exc:  # NATS not up yet: try again
                log.warning("broker_unreachable", error=str(exc) or type(exc).__name__)
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
                await asyncio.sleep(1.0)
                continue
            self.client, self.js = client, js
        assert self.js is not None
        js = self.js
        loop = asyncio.get_running_loop()
        read_at = loop.time()
        while True:
            with contextlib.suppress(Exception):  # unreachable for now: the age grows
                info = await js.consumer_info(self.settings.events_stream, CONSUMER, timeout=2.0)
                LAG.labels("pending").set(info.num_pending or 0)
                LAG.labels("ack_pending").set(info.num_ack_pending or 0)
                LAG.labels("redelivered").set(info.num_redelivered or 0)
                read_at = loop.time()
            LAG_AGE.set(loop.time() - read_at)
            await asyncio.sleep(self.settings.events_lag_check_s)

    async def publish(
        self, firsts: Sequence[Candidate], raw_events: Sequence[Any], received: datetime
    ) -> Published:
        """Publish each event and wait for every acknowledgement; BrokerUnavailable when
        one fails or is late (some may then be stored: sent again, they are duplicates)."""
        js = self.js
        if js is None:
            raise BrokerUnavailable("not connected to NATS")
        at = isoformat(received)
        timeout = self.settings.events_publish_timeout_s
        to = subject(self.settings)

        async def one(candidate: Candidate) -> api.PubAck:
            return await js.publish(
                to,
                orjson.dumps(raw_events[candidate.index]),
                timeout=timeout,
                stream=self.settings.events_stream,
                headers={MSG_ID: message_id(candidate.key), RECEIVED: at},
            )

        try:
            acks = await asyncio.wait_for(
                asyncio.gather(*(one(c) for c in firsts)), timeout=timeout + 1.0
            )
        except Exception as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
        return Published({c.key for c, ack in zip(firsts, acks, strict=True) if ack.duplicate})

    async def ingest(
        self, raw_events: Sequence[Any], *, snapshot_of: SnapshotOf, window: Window
    ) -> Outcome:
        """POST /v1/events through JetStream: screened as service.ingest screens, published,
        and answered as service.ingest answers, except that an id JetStream already held is
        a duplicate whatever its payload (the aggregator finds a conflicting one, keeps the
        first copy and logs it: docs/scale-out.md)."""
        screened = await screen(raw_events, snapshot_of=snapshot_of, window=window)
        outcome = screened.outcome
        if not screened.firsts:
            return outcome
        published = await self.publish(screened.firsts, raw_events, window.now)
        fresh = [c for c in screened.firsts if c.key not in published.duplicates]
        outcome.settle(screened.repeats, screened.sent)
        outcome.duplicates += len(screened.firsts) - len(fresh)
        outcome.accepted = len(fresh)
        outcome.unmetered = unmetered(fresh)
        return outcome
