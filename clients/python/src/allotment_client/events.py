"""Usage events: `track()` buffers them, a sender delivers them to `POST /v1/events` in
batches, and a file spool keeps them while the service cannot be reached.

    EventQueue(source=, spool=, batch_size=, durable=)   the state, shared (no I/O but the spool's)
      .event(type, customer, data, …)  → a CloudEvent with its id and time fixed once
      .add(event)                         buffer it (durable=True: spool it first, fsync)
      .add_many(events)                   durable: spool them all with one fsync
      .take()                             the next batch to send: spooled events first, at
                                          most batch_size events and max_batch_bytes encoded
      .too_large(batch, …)                the service answered 413: cut smaller, or refuse
                                          the one event too large for it
      .delivered(batch, answer)           the service answered: acknowledge the batch
      .undelivered(batch)                 it did not: spool the batch, try again later
    Tracker(client, queue)               a sender thread for the sync client
    AsyncTracker(client, queue)          a sender task for the async client

Each event gets its id and time when it is tracked, never again: a batch retried (by the
HTTP retries, or later from the spool) carries the same ids and the same payload, so the
service counts it once (a re-sent id is a duplicate, docs/usage.md). A batch the service
answered is done, whatever the answer: events it refused (`rejected`, `conflicts`) are
kept in `refused` (the last 1,000) and logged, never retried. While the service is
unreachable every buffered event goes to the spool (fsync), and the sender drains the
spool, oldest first, once it answers again.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from allotment_client import _calls
from allotment_client.errors import AllotmentError
from allotment_client.spool import Spool, event_key

if TYPE_CHECKING:
    from allotment_client.aio import AsyncAllotment
    from allotment_client.client import Allotment

log = logging.getLogger("allotment_client.events")

MAX_BATCH = 1000  # the service's limit per request
# Half the service's default body limit (ALLOTMENT_MAX_BODY_BYTES, 1 MiB): a batch is cut
# at this encoded size, so large events never make a batch the service refuses (413).
MAX_BATCH_BYTES = 512 * 1024
MIN_BATCH_BYTES = 16 * 1024
SPEC_VERSION = "1.0"


class EventQueue:
    def __init__(
        self,
        *,
        source: str = "allotment-client",
        spool: Spool | None = None,
        batch_size: int = 500,
        max_buffered: int = 100_000,
        durable: bool = False,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        if durable and spool is None:
            raise ValueError("durable=True needs a spool")
        self.source = source
        self.spool = spool
        self.batch_size = min(batch_size, MAX_BATCH)
        self.max_batch_bytes = max_batch_bytes
        self.max_buffered = max_buffered
        self.durable = durable
        self.buffer: collections.deque[dict[str, Any]] = collections.deque()
        self.refused: collections.deque[tuple[dict[str, Any], Any]] = collections.deque(maxlen=1000)
        self.unreachable = False  # the last send failed: buffer into the spool meanwhile
        self.sent = 0
        self.refused_total = 0  # every event the service refused (`refused` keeps the last)
        self.dropped = 0
        self.in_flight = 0
        self.wake = threading.Event()

    def event(
        self,
        type: str,
        customer: str,
        data: Any = None,
        *,
        id: str | None = None,
        time: datetime | str | None = None,
        tenant: str | None = None,
        source: str | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A CloudEvent, its id and time chosen now, once."""
        when = time or datetime.now(UTC)
        event: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": id or uuid.uuid4().hex,
            "source": source or self.source,
            "type": type,
            "subject": customer,
            "time": when if isinstance(when, str) else when.isoformat(),
        }
        if data is not None:
            event["data"] = data
        if tenant is not None:
            event["tenant"] = tenant
        if extensions:
            event.update(extensions)
        return event

    def add(self, event: dict[str, Any]) -> None:
        if self.durable:
            assert self.spool is not None
            self.spool.append([event])
        elif len(self.buffer) >= self.max_buffered and self.spool is None:
            self.dropped += 1
            log.warning("event buffer full: dropped %s", event_key(event))
            return
        else:
            self.buffer.append(event)
        if len(self.buffer) >= self.batch_size or self.durable:
            self.wake.set()

    def add_many(self, events: Sequence[dict[str, Any]]) -> None:
        """Spool `events` durably, all with one write and one fsync (a batch a caller
        handed over at once: the sidecar agent's `POST /v1/events`). Needs `durable=True`."""
        if not self.durable or self.spool is None:
            raise ValueError("add_many() is for a durable queue")
        self.spool.append(events)
        self.wake.set()

    def backlog(self) -> int:
        return len(self.buffer) + (len(self.spool) if self.spool is not None else 0)

    def take(self) -> tuple[list[dict[str, Any]], bool]:
        """The next batch, and whether it came from the spool. Spooled events go first;
        while the service is unreachable, the buffer is moved to the spool first."""
        if self.spool is not None:
            if self.unreachable and self.buffer:
                self._spool_buffer()
            batch = self._within_bytes(self.spool.pending(self.batch_size))
            if batch:
                self.in_flight = len(batch)
                return batch, True
        batch = self._within_bytes(list(itertools.islice(self.buffer, self.batch_size)))
        for _ in batch:
            self.buffer.popleft()
        self.in_flight = len(batch)
        return batch, False

    def _within_bytes(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The longest prefix of `events` whose encoding stays within `max_batch_bytes`
        (at least one event: one too large alone is the service's to refuse)."""
        size = 2
        for index, event in enumerate(events):
            size += len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()) + 1
            if size > self.max_batch_bytes and index > 0:
                return events[:index]
        return events

    def too_large(self, batch: Sequence[dict[str, Any]], spooled: bool, error: Any) -> None:
        """The service refused the batch as too large (413). Several events: smaller
        batches from now on, and this one goes back to be cut again. One event: it is
        refused for good — too large for the service, it would block every later event."""
        self.in_flight = 0
        if len(batch) > 1:
            self.max_batch_bytes = max(MIN_BATCH_BYTES, self.max_batch_bytes // 2)
            if not spooled:
                self.buffer.extendleft(reversed(batch))
            return
        self.refused.append((batch[0], {"status": 413, "detail": str(error)}))
        self.refused_total += 1
        log.warning("event %s refused as too large: %s", event_key(batch[0]), error)
        if spooled and self.spool is not None:
            self.spool.acknowledge([event_key(batch[0])])

    def _spool_buffer(self) -> None:
        assert self.spool is not None
        events = []
        while self.buffer:
            events.append(self.buffer.popleft())
        self.spool.append(events)

    def delivered(self, batch: Sequence[dict[str, Any]], spooled: bool, answer: Any) -> None:
        self.unreachable = False
        self.sent += len(batch)
        if isinstance(answer, Mapping):
            for kind in ("rejected", "conflicts"):
                for item in answer.get(kind) or []:
                    index = item.get("index") if isinstance(item, Mapping) else None
                    if isinstance(index, int) and 0 <= index < len(batch):
                        self.refused.append((batch[index], item))
                        self.refused_total += 1
                        log.warning("event %s refused: %s", event_key(batch[index]), item)
        if spooled and self.spool is not None:
            self.spool.acknowledge(event_key(event) for event in batch)

    def undelivered(self, batch: Sequence[dict[str, Any]], spooled: bool) -> None:
        self.unreachable = True
        if spooled:
            return
        if self.spool is not None:
            self.spool.append(batch)
        else:
            self.buffer.extendleft(reversed(batch))


class _Backoff:
    def __init__(self) -> None:
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return float(min(5.0, 0.25 * 2 ** min(self.failures - 1, 5)))

    def reset(self) -> None:
        self.failures = 0


class Tracker:
    """The sync client's sender: one daemon thread, waking every `interval` seconds or when
    a batch is full."""

    def __init__(self, client: Allotment, queue: EventQueue, *, interval: float = 0.5) -> None:
        self.client = client
        self.queue = queue
        self.interval = interval
        self._stop = False
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="allotment-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = _Backoff()
        while True:
            self.queue.wake.wait(self.interval)
            self.queue.wake.clear()
            while True:
                try:
                    batch, spooled = self.queue.take()
                except OSError as exc:  # the spool's disk: keep trying, never die of it
                    log.error("event spool unusable: %s", exc)
                    self.queue.in_flight = 0
                    self.queue.wake.wait(backoff.next())
                    continue
                if not batch:
                    break
                try:
                    answer = self.client._send(_calls.send_events(batch))
                except AllotmentError as exc:
                    if exc.status == 413:
                        self.queue.too_large(batch, spooled, exc)
                        continue
                    self.queue.undelivered(batch, spooled)
                    self.queue.in_flight = 0
                    log.info("events not delivered (%s); %d waiting", exc, self.queue.backlog())
                    if self._stop:
                        break
                    self.queue.wake.wait(backoff.next())
                    continue
                except Exception as exc:  # an answer that is not JSON
                    self.queue.undelivered(batch, spooled)
                    self.queue.in_flight = 0
                    log.info("events not delivered (%s); %d waiting", exc, self.queue.backlog())
                    if self._stop:
                        break
                    self.queue.wake.wait(backoff.next())
                    continue
                backoff.reset()
                self.queue.delivered(batch, spooled, answer)
                self.queue.in_flight = 0
            with self._idle:
                self._idle.notify_all()
            if self._stop:
                return

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every tracked event is delivered; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while self.queue.backlog() or self.queue.in_flight:
            left = deadline - time.monotonic()
            if left <= 0 or not self._thread.is_alive():
                return False
            self.queue.wake.set()
            with self._idle:
                self._idle.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be within `timeout`; spool the rest (when there is a spool)."""
        self.flush(timeout)
        self._stop = True
        self.queue.wake.set()
        self._thread.join(timeout)
        if self.queue.buffer and self.queue.spool is not None and not self._thread.is_alive():
            self.queue._spool_buffer()


class AsyncTracker:
    """The async client's sender: one task on the running loop. Spool writes (fsync) run in
    a worker thread so the loop never waits on the disk."""

    def __init__(self, client: AsyncAllotment, queue: EventQueue, *, interval: float = 0.5) -> None:
        self.client = client
        self.queue = queue
        self.interval = interval
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        # `wake` is a threading.Event: track() may be called from any thread.
        while time.monotonic() < deadline and not self.queue.wake.is_set():  # noqa: ASYNC110
            await asyncio.sleep(min(0.02, seconds))
        self.queue.wake.clear()

    async def _run(self) -> None:
        backoff = _Backoff()
        while True:
            await self._pause(self.interval)
            while True:
                try:
                    batch, spooled = await asyncio.to_thread(self.queue.take)
                except OSError as exc:  # the spool's disk: keep trying, never die of it
                    log.error("event spool unusable: %s", exc)
                    self.queue.in_flight = 0
                    await self._pause(backoff.next())
                    continue
                if not batch:
                    break
                try:
                    answer = await self.client._send(_calls.send_events(batch))
                except AllotmentError as exc:
                    if exc.status == 413:
                        await asyncio.to_thread(self.queue.too_large, batch, spooled, exc)
                        continue
                    await asyncio.to_thread(self.queue.undelivered, batch, spooled)
                    self.queue.in_flight = 0
                    log.info("events not delivered (%s); %d waiting", exc, self.queue.backlog())
                    if self._stop:
                        break
                    await self._pause(backoff.next())
                    continue
                except Exception as exc:  # an answer that is not JSON
                    await asyncio.to_thread(self.queue.undelivered, batch, spooled)
                    self.queue.in_flight = 0
                    log.info("events not delivered (%s); %d waiting", exc, self.queue.backlog())
                    if self._stop:
                        break
                    await self._pause(backoff.next())
                    continue
                backoff.reset()
                await asyncio.to_thread(self.queue.delivered, batch, spooled, answer)
                self.queue.in_flight = 0
            if self._stop:
                return

    async def flush(self, timeout: float = 30.0) -> bool:  # noqa: ASYNC109 - a budget, not a cancel
        self.start()
        deadline = time.monotonic() + timeout
        while self.queue.backlog() or self.queue.in_flight:
            if time.monotonic() > deadline or (self._task is not None and self._task.done()):
                return False
            self.queue.wake.set()
            await asyncio.sleep(0.02)
        return True

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a budget, not a cancel
        await self.flush(timeout)
        self._stop = True
        self.queue.wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        if self.queue.buffer and self.queue.spool is not None:
            await asyncio.to_thread(self.queue._spool_buffer)
