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
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
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
MAX_ID = 256
MAX_SOURCE = 1024
MAX_TYPE = 256
MAX_BACKOFF_S = 60.0  # a key the service refuses (401, 403): nothing will change soon
OUTAGE_BACKOFF_S = 5.0  # unreachable, 429, 5xx: back within seconds of the service
_MAX_NUMBER = int(sys.float_info.max)
CUSTOMER_KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def json_data(value: Any, path: str = "data") -> Any:
    """`value` as the JSON it will be sent as, checked now: objects with string keys,
    arrays (lists, tuples), strings, booleans, None, integers and finite floats. A
    `Decimal` becomes a JSON number when that is lossless (an integer, or a float whose
    shortest text is the decimal's own value), else a TypeError; NaN and Infinity (float or
    Decimal) are a ValueError; any other type (datetime, UUID, set, bytes, …) a TypeError."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_NUMBER:  # read as a double by the service: infinity there
            raise ValueError(f"{path}: {value} is too large for a JSON number the service reads")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value!r} is not a JSON number (NaN and Infinity are not)")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{path}: {value!r} is not a JSON number (NaN and Infinity are not)")
        if value == value.to_integral_value():
            return int(value)
        number = float(value)
        if not math.isfinite(number) or Decimal(repr(number)) != value:
            raise TypeError(f"{path}: {value!r} has no exact JSON number: pass a str or float")
        return number
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is not a string")
            out[key] = json_data(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [json_data(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise TypeError(
        f"{path}: a {type(value).__name__} is not JSON: pass a str, number, "
        "bool, None, list or dict"
    )


def encode(event: Mapping[str, Any]) -> bytes:
    """An event's JSON, strictly (no NaN or Infinity, JSON types only): a ValueError or
    TypeError for one the service could not read."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def event_problems(event: Mapping[str, Any]) -> list[str]:
    """What the service would refuse in this event whatever its state (docs/usage.md,
    "Sending events"): the id, source, type, subject and time attributes."""
    errors = []
    for name, limit in (("id", MAX_ID), ("source", MAX_SOURCE), ("type", MAX_TYPE)):
        value = event.get(name)
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            errors.append(f"{name}: a non-empty string (at most {limit} characters)")
    subject = event.get("subject")
    if not isinstance(subject, str) or not CUSTOMER_KEY.fullmatch(subject):
        errors.append(f"customer {subject!r}: a customer key: a-z, 0-9, -_. (at most 64)")
    when = event.get("time")
    if when is not None:
        problem = time_problem(when)
        if problem:
            errors.append(f"time: {problem}")
    tenant = event.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        errors.append("tenant: a tenant key (a non-empty string)")
    return errors


def time_problem(value: Any) -> str | None:
    """Why `value` is not an event time the service takes (RFC 3339 with an offset)."""
    if not isinstance(value, str):
        return "an RFC 3339 timestamp string"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not an RFC 3339 timestamp"
    if moment.tzinfo is None:
        return f"{value!r} needs a UTC offset (e.g. Z)"
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return f"{value!r} is out of range once in UTC"
    return None


def checked(event: Mapping[str, Any]) -> bytes:
    """`event` encoded strictly after checking its attributes: ValueError (an attribute the
    service refuses, NaN, Infinity) or TypeError (a value that is not JSON)."""
    errors = event_problems(event)
    if errors:
        raise ValueError(f"event refused: {'; '.join(errors)}")
    return encode(event)


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
        self.sent = 0  # events in batches the service answered (refused ones included)
        self.acknowledged = 0  # of those, the events it took (accepted or duplicates)
        self.refused_total = 0  # every event the service refused (`refused` keeps the last)
        self.dropped = 0
        self.in_flight = 0
        self.one_at_a_time = 0  # after a batch answered 400: send its events one by one
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
        """A CloudEvent, its id and time chosen now, once. Checked now, as the service
        would: ValueError for an attribute it refuses (an empty type, a customer that is
        not a key, a naive or unreadable time, NaN or Infinity in `data`), TypeError for
        data that is not JSON (a lossless `Decimal` is sent as a JSON number)."""
        when = time or datetime.now(UTC)
        if isinstance(when, datetime) and when.tzinfo is None:
            raise ValueError(f"time {when!r} is naive: give it a timezone (e.g. UTC)")
        event: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": id or uuid.uuid4().hex,
            "source": source or self.source,
            "type": type,
            "subject": customer,
            "time": when if isinstance(when, str) else when.isoformat(),
        }
        if data is not None:
            event["data"] = json_data(data)
        if tenant is not None:
            event["tenant"] = tenant
        if extensions:
            event.update(extensions)
        checked(event)
        return event

    def add(self, event: dict[str, Any]) -> None:
        """Buffer (or spool) `event`, encoded strictly first: ValueError or TypeError for
        one the service could not read, never buffered."""
        checked(event)
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
        for event in events:
            checked(event)
        self.spool.append(events)
        self.wake.set()

    def backlog(self) -> int:
        return len(self.buffer) + (len(self.spool) if self.spool is not None else 0)

    def take(self) -> tuple[list[dict[str, Any]], bool]:
        """The next batch, and whether it came from the spool. Spooled events go first;
        while the service is unreachable, the buffer is moved to the spool first."""
        limit = 1 if self.one_at_a_time > 0 else self.batch_size
        if self.spool is not None:
            if self.unreachable and self.buffer:
                self._spool_buffer()
            while True:
                batch, bad = self._within_bytes(self.spool.pending(limit))
                if not bad:
                    break
                self._refuse_unreadable(bad)
                self.spool.acknowledge(event_key(event) for event, _ in bad)
            if batch:
                self.in_flight = len(batch)
                self.one_at_a_time = max(0, self.one_at_a_time - 1)
                return batch, True
        while True:
            batch, bad = self._within_bytes(list(itertools.islice(self.buffer, limit)))
            for _ in range(len(batch) + len(bad)):
                self.buffer.popleft()
            self._refuse_unreadable(bad)
            if batch or not self.buffer:
                break
        self.in_flight = len(batch)
        if batch:
            self.one_at_a_time = max(0, self.one_at_a_time - 1)
        return batch, False

    def _within_bytes(
        self, events: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], Exception]]]:
        """The longest prefix of `events` whose encoding stays within `max_batch_bytes`
        (at least one event: one too large alone is the service's to refuse). When an
        event cannot be encoded strictly (NaN, a value that is not JSON: spooled by an
        older version), the prefix stops before it and it is returned alone as `bad`."""
        size = 2
        for index, event in enumerate(events):
            try:
                size += len(encode(event)) + 1
            except (TypeError, ValueError) as exc:
                if index == 0:
                    return [], [(event, exc)]
                return events[:index], []
            if size > self.max_batch_bytes and index > 0:
                return events[:index], []
        return events, []

    def _refuse_unreadable(self, bad: Sequence[tuple[dict[str, Any], Exception]]) -> None:
        for event, exc in bad:
            self.refused.append((event, {"status": 400, "detail": f"not valid JSON: {exc}"}))
            self.refused_total += 1
            log.warning("event %s refused: not valid JSON: %s", event_key(event), exc)

    def malformed(self, batch: Sequence[dict[str, Any]], spooled: bool, error: Any) -> None:
        """The service answered 400 for the whole batch (it could not read it). Several
        events: they are sent again one by one, so only the offending one is refused. One
        event: it is refused for good, as an event too large is — else it would block
        every later event."""
        self.in_flight = 0
        if len(batch) > 1:
            self.one_at_a_time = len(batch)
            if not spooled:
                self.buffer.extendleft(reversed(batch))
            return
        self.refused.append((batch[0], {"status": 400, "detail": str(error)}))
        self.refused_total += 1
        log.warning("event %s refused as malformed: %s", event_key(batch[0]), error)
        if spooled and self.spool is not None:
            self.spool.acknowledge([event_key(batch[0])])

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
        refused = 0
        if isinstance(answer, Mapping):
            for kind in ("rejected", "conflicts"):
                for item in answer.get(kind) or []:
                    index = item.get("index") if isinstance(item, Mapping) else None
                    if isinstance(index, int) and 0 <= index < len(batch):
                        self.refused.append((batch[index], item))
                        self.refused_total += 1
                        refused += 1
                        log.warning("event %s refused: %s", event_key(batch[index]), item)
        self.acknowledged += len(batch) - refused
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
    """Exponential from 0.25 s: 0.5 s, 1 s, … up to `cap` (5 s while the service is
    unreachable or overloaded, so delivery resumes soon after it is back; 60 s while it
    refuses the key)."""

    def __init__(self) -> None:
        self.failures = 0

    def next(self, cap: float = MAX_BACKOFF_S) -> float:
        self.failures += 1
        return float(min(cap, 0.25 * 2 ** min(self.failures - 1, 10)))

    def reset(self) -> None:
        self.failures = 0


def _failed(queue: EventQueue, backoff: _Backoff, exc: BaseException) -> float:
    """The send failed (401, 403, 429, 5xx, unreachable, an answer that is not JSON, or
    anything else): the events stay (spooled), the next try waits. Logged once a step."""
    refused = getattr(exc, "status", None) in (401, 403)
    delay = backoff.next(MAX_BACKOFF_S if refused else OUTAGE_BACKOFF_S)
    log.warning(
        "events not delivered (%s); %d waiting; next try in %.2f s",
        exc,
        queue.backlog() + queue.in_flight,
        delay,
    )
    queue.in_flight = 0
    return delay


class Tracker:
    """The sync client's sender: one daemon thread, waking every `interval` seconds or when
    a batch is full."""

    def __init__(self, client: Allotment, queue: EventQueue, *, interval: float = 0.5) -> None:
        self.client = client
        self.queue = queue
        self.interval = interval
        self._stop = False
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="allotment-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = _Backoff()
        while True:
            self.queue.wake.wait(self.interval)
            self.queue.wake.clear()
            while True:
                delay = self._step(backoff)
                if delay is None:
                    break
                # Only close() cuts a back-off short: flush() waking the sender must not
                # turn it into a tight loop.
                if delay and (self._stop or self._stopping.wait(delay)):
                    break
            with self._idle:
                self._idle.notify_all()
            if self._stop:
                return

    def _step(self, backoff: _Backoff) -> float | None:
        """Send one batch: None when there was none, 0 to go on, else the seconds to wait."""
        batch: list[dict[str, Any]] = []
        spooled = False
        try:
            batch, spooled = self.queue.take()
            if not batch:
                return None
            try:
                answer = self.client._send(_calls.send_events(batch))
            except AllotmentError as exc:
                if exc.status == 413:
                    self.queue.too_large(batch, spooled, exc)
                    return 0
                if exc.status == 400:
                    self.queue.malformed(batch, spooled, exc)
                    return 0
                self.queue.undelivered(batch, spooled)
                return _failed(self.queue, backoff, exc)
            backoff.reset()
            self.queue.delivered(batch, spooled, answer)
            self.queue.in_flight = 0
            return 0
        except Exception as exc:  # never die of it: the spool's disk, an answer not JSON, …
            log.exception("event sender: %s", exc)
            if batch:
                try:
                    self.queue.undelivered(batch, spooled)
                except Exception:  # noqa: BLE001 - the spool's disk again: keep in memory
                    self.queue.buffer.extendleft(reversed(batch))
            return _failed(self.queue, backoff, exc)

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
        self._stopping.set()
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

    async def _backoff(self, seconds: float) -> None:
        """Wait `seconds`, cut short by close() only (not by flush())."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop:  # noqa: ASYNC110
            await asyncio.sleep(min(0.05, seconds))

    async def _run(self) -> None:
        backoff = _Backoff()
        while True:
            await self._pause(self.interval)
            while True:
                delay = await self._step(backoff)
                if delay is None:
                    break
                if delay:
                    if self._stop:
                        break
                    await self._backoff(delay)
                    if self._stop:
                        break
            if self._stop:
                return

    async def _step(self, backoff: _Backoff) -> float | None:
        """Send one batch: None when there was none, 0 to go on, else the seconds to wait."""
        batch: list[dict[str, Any]] = []
        spooled = False
        try:
            batch, spooled = await asyncio.to_thread(self.queue.take)
            if not batch:
                return None
            try:
                answer = await self.client._send(_calls.send_events(batch))
            except AllotmentError as exc:
                if exc.status == 413:
                    await asyncio.to_thread(self.queue.too_large, batch, spooled, exc)
                    return 0
                if exc.status == 400:
                    await asyncio.to_thread(self.queue.malformed, batch, spooled, exc)
                    return 0
                await asyncio.to_thread(self.queue.undelivered, batch, spooled)
                return _failed(self.queue, backoff, exc)
            backoff.reset()
            await asyncio.to_thread(self.queue.delivered, batch, spooled, answer)
            self.queue.in_flight = 0
            return 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never die of it: the spool's disk, an answer not JSON, …
            log.exception("event sender: %s", exc)
            if batch:
                try:
                    await asyncio.to_thread(self.queue.undelivered, batch, spooled)
                except Exception:  # noqa: BLE001 - the spool's disk again: keep in memory
                    self.queue.buffer.extendleft(reversed(batch))
            return _failed(self.queue, backoff, exc)

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
