"""NATS JetStream between ingestion and aggregation (docs/scale-out.md, "NATS JetStream").

    API worker   POST /v1/events screens the batch (service.screen: no writes), publishes
                 the first copy of each valid (source, id) to the stream with
                 `Nats-Msg-Id` = `source/id`, and answers only once JetStream acknowledged
                 every one (a replicated write when the stream has replicas); a failed or
                 late acknowledgement is a 503 and the client sends the batch again
    aggregator   `allotment aggregator` (usage/aggregator.py) fetches large batches from the
                 durable pull consumer all aggregators share, ingests each batch through
                 service.ingest (the database's (source, id) dedupe stays the last word) and
                 acknowledges the messages only after the commit; a message it can never
                 write is set aside on `<stream>.dead` (aggregator.py, "Poison messages")

In an id, `%` and `/` are percent-encoded, so `source/id` names one (source, id): a source
holds slashes (it is a URI), and JetStream drops a message whose id it saw within
`ALLOTMENT_EVENTS_DEDUPE_WINDOW_S` as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats
import orjson
import structlog
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError
from prometheus_client import Gauge

from allotment.config import Settings, without_credentials
from allotment.db import _unstorable
from allotment.kit.background import cancel
from allotment.kit.clock import isoformat
from allotment.usage.events import Event, Window
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
    "Seconds since the consumer's lag was last read, or since the process started when it "
    "never was (it grows while NATS is unreachable)",
)
DEAD = Gauge(
    "allotment_events_broker_dead_letters",
    "Events the aggregators could never write, set aside on the stream's `<stream>.dead` "
    "subject until an operator removes them",
)
REPORT_EVERY_S = 5.0  # one warning per ongoing trouble this often, with a count


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


def redacted(url: str) -> str:
    """The servers of ALLOTMENT_EVENTS_BROKER as logs may show them: no password or token."""
    return ",".join(without_credentials(server) for server in servers(url))


def subject(settings: Settings) -> str:
    """The subject events are published on, `<stream>.events`: streams of several
    deployments can share a cluster (a subject belongs to one stream)."""
    return f"{settings.events_stream}.events"


def dead_subject(settings: Settings) -> str:
    """Where the aggregators set aside a message they can never write, `<stream>.dead`: in
    the same stream (kept until purged, no consumer reads it)."""
    return f"{settings.events_stream}.dead"


def describe(exc: BaseException) -> str:
    """What went wrong with NATS, in a sentence an operator can act on."""
    if isinstance(exc, NoStreamResponseError | NoRespondersError) or (
        isinstance(exc, ServiceUnavailableError) and not exc.description
    ):
        return "JetStream did not answer (not enabled on the NATS servers, or without a quorum)"
    if isinstance(exc, APIError) and exc.description:
        return f"JetStream: {exc.description}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer from NATS in time"
    return str(exc) or type(exc).__name__


def holds_nul(value: Any) -> bool:
    """Whether a string in `value` (JSON: keys included) holds U+0000."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


def unstorable(event: Event) -> bool:
    """Whether PostgreSQL would refuse to store the event: a NUL in one of its texts or in its
    data or extensions (jsonb holds no `\\u0000`). Without a broker the database says so and
    the request is a 422 (db.py); through the broker it must be said before publishing, or
    the aggregator could never write the event."""
    texts = (event.source, event.id, event.type, event.subject, event.tenant or "")
    return (
        any("\x00" in t for t in texts)
        or holds_nul(event.data)
        or holds_nul(dict(event.extensions))
    )


class Reporter:
    """A warning about an ongoing trouble at most once every REPORT_EVERY_S, with how many
    times it happened since the last one: the NATS client reports every reconnect attempt
    (several a second while NATS is down). `last` is the latest error."""

    def __init__(self, event: str, **context: Any) -> None:
        self.event = event
        self.context = context
        self.last: str | None = None
        self._held = 0
        self._logged_at: float | None = None

    def __call__(self, error: str) -> None:
        self.last = error
        self._held += 1
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= REPORT_EVERY_S:
            log.warning(self.event, error=error, count=self._held, **self.context)
            self._held, self._logged_at = 0, now

    async def nats_error(self, error: Exception) -> None:
        """The NATS client's error callback."""
        self(describe(error))


def message_id(key: EventKey) -> str:
    source, id_ = key
    return f"{source}/{id_.replace('%', '%25').replace('/', '%2F')}"


async def connect(
    settings: Settings, *, name: str, report: Callable[[Exception], Awaitable[None]]
) -> Client:
    """A client that keeps reconnecting to any of the servers for as long as it lives (the
    first connection included: this waits until one server answers). `report` hears each
    error (Reporter.nats_error: not the client's default traceback on every attempt)."""
    assert settings.events_broker is not None
    return await nats.connect(
        error_cb=report,
        servers=servers(settings.events_broker),
        name=name,
        connect_timeout=2,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """The stream and the aggregators' consumer, created when missing (work-queue retention:
    a message leaves the stream once an aggregator acknowledged it). A stream created before
    the dead-letter subject existed is given it."""
    subjects = [subject(settings), dead_subject(settings)]
    try:
        info = await js.stream_info(settings.events_stream)
    except NotFoundError:
        await js.add_stream(
            api.StreamConfig(
                name=settings.events_stream,
                subjects=subjects,
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                num_replicas=settings.events_stream_replicas,
                duplicate_window=settings.events_dedupe_window_s,
            )
        )
    else:
        held = list(info.config.subjects or [])
        if dead_subject(settings) not in held:
            await js.update_stream(info.config, subjects=[*held, dead_subject(settings)])
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
    while NATS is down; events are then a 503, and /readyz says why) and reads the
    consumer's lag for /metrics."""

    def __init__(self, settings: Settings) -> None:
        assert settings.events_broker is not None
        self.settings = settings
        self.url = redacted(settings.events_broker)
        self.client: Client | None = None
        self.js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._errors = Reporter("nats_error", broker=self.url)
        self._refusals = Reporter("events_unavailable", broker=self.url)
        self._setup: str | None = None  # why the stream could not be made ready, if so
        # The lag's age counts from the process's start until the first read (never 0.0
        # while it was never read: docs/scale-out.md, "Metrics").
        self._read_at = time.monotonic()
        LAG_AGE.set_function(lambda: time.monotonic() - self._read_at)

    def problem(self) -> str | None:
        """Why events cannot be published now (None: connected, the stream ready)."""
        client = self.client
        if client is not None and self.js is not None and client.is_connected:
            return None
        if client is not None and client.is_connected:
            return self._setup or "the stream is being set up"
        last = self._errors.last or self._setup
        state = "reconnecting" if client is not None else "not connected"
        return f"{state} to NATS at {self.url}" + (f": {last}" if last else "")

    def refused(self, reason: str) -> None:
        """A POST /v1/events answered 503: logged, at most every REPORT_EVERY_S."""
        self._refusals(reason)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()

    async def _run(self) -> None:
        client = await connect(self.settings, name="allotment-api", report=self._errors.nats_error)
        self.client = client
        log.info("broker_connected", broker=self.url)
        js = client.jetstream(timeout=self.settings.events_publish_timeout_s)
        while self.js is None:
            try:
                await ensure_stream(js, self.settings)
            except Exception as exc:  # JetStream off, no quorum, no peers: try again
                self._setup = f"the stream {self.settings.events_stream} is not ready: " + (
                    describe(exc)
                )
                self._errors(self._setup)
                await asyncio.sleep(1.0)
                continue
            self._setup, self.js = None, js
        dead = dead_subject(self.settings)
        while True:
            with contextlib.suppress(Exception):  # unreachable for now: the age grows
                info = await js.consumer_info(self.settings.events_stream, CONSUMER, timeout=2.0)
                LAG.labels("pending").set(info.num_pending or 0)
                LAG.labels("ack_pending").set(info.num_ack_pending or 0)
                LAG.labels("redelivered").set(info.num_redelivered or 0)
                self._read_at = time.monotonic()
                stream = await js.stream_info(self.settings.events_stream, subjects_filter=dead)
                DEAD.set((stream.state.subjects or {}).get(dead, 0))
            await asyncio.sleep(self.settings.events_lag_check_s)

    async def publish(
        self, firsts: Sequence[Candidate], raw_events: Sequence[Any], received: datetime
    ) -> Published:
        """Publish each event and wait for every acknowledgement; BrokerUnavailable when
        one fails or is late (some may then be stored: sent again, they are duplicates)."""
        js = self.js
        if js is None:
            raise BrokerUnavailable(self.problem() or "not connected to NATS")
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
        except Exception as exc:  # disconnected meanwhile: say so rather than "timeout"
            raise BrokerUnavailable(self.problem() or describe(exc)) from exc
        return Published({c.key for c, ack in zip(firsts, acks, strict=True) if ack.duplicate})

    async def ingest(
        self, raw_events: Sequence[Any], *, snapshot_of: SnapshotOf, window: Window
    ) -> Outcome:
        """POST /v1/events through JetStream: screened as service.ingest screens, published,
        and answered as service.ingest answers, except that an id JetStream already held is
        a duplicate whatever its payload (the aggregator finds a conflicting one, keeps the
        first copy and logs it: docs/scale-out.md). An event PostgreSQL could not store (a
        NUL) makes the request a 422 before anything is published, as without a broker."""
        screened = await screen(raw_events, snapshot_of=snapshot_of, window=window)
        outcome = screened.outcome
        if not screened.firsts:
            return outcome
        if any(unstorable(c.reading.event) for c in screened.firsts):
            raise _unstorable()
        published = await self.publish(screened.firsts, raw_events, window.now)
        fresh = [c for c in screened.firsts if c.key not in published.duplicates]
        outcome.settle(screened.repeats, screened.sent)
        outcome.duplicates += len(screened.firsts) - len(fresh)
        outcome.accepted = len(fresh)
        outcome.unmetered = unmetered(fresh)
        return outcome
