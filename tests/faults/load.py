"""A steady mixed load against the workers, and a sampler of what PostgreSQL holds.

`Load` runs a few dozen asyncio tasks that spread requests round-robin over the workers:

    checks      /v1/check on every customer: `reports` (plain), `editor` (seat gate, for a
                subject that holds or held a seat), `api` (metered)
    seats       member seats for ever-new subjects, each POST with its own Idempotency-Key;
                when a customer holds RELEASE_AT of them (or is refused), the oldest is
                released — so every pool churns at its cap
    instances   register an ever-new fingerprint (vm, weight 1, or cluster, weight 4) with an
                Idempotency-Key, heartbeat it a few times, deregister it
    events      CloudEvents batches of ever-new ids (`api.call`, data.count 1–5)
    consumes    `POST /v1/check {consume: 1}` with an Idempotency-Key

A client retries what it may retry, as a well-behaved one does: the same request (same
Idempotency-Key, same event ids, same body) on the next worker, after a transport error, a
503, or a 409 `idempotency-in-flight` — until it gets an answer or the retry deadline. Every
attempt is recorded (`Record`) with its status, worker and timing, and what was finally
acknowledged is kept so the invariants can be checked against the database afterwards.

`Sampler` polls PostgreSQL over its own autocommit connection meanwhile: each sample is the
live member seats and the live instance weight of every loaded customer at that instant.
While PostgreSQL is down it counts what it skipped and reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import psycopg

from allotment.kit.clock import isoformat, utcnow

BATCH = "application/cloudevents-batch+json"
SOURCE = "faults-load"  # the `source` of every event the load sends
IN_FLIGHT = "https://allotment.dev/problems/idempotency-in-flight"

CHECK_TASKS = 12
SEAT_TASKS = 3
INSTANCE_TASKS = 3
EVENT_TASKS = 2
CONSUME_TASKS = 1
EVENTS_PER_BATCH = 10
HEARTBEATS = 3
WRITES = ("seat", "release", "instance", "heartbeat", "deregister", "events", "consume")


@dataclass
class Record:
    """One HTTP attempt."""

    kind: str
    worker: int
    sent: float  # perf_counter
    done: float
    status: int | str  # the HTTP status, or "conn:<exception>" when no answer came
    attempt: int
    retry_after: str | None = None
    problem: bool = False  # answered application/problem+json
    replayed: bool = False  # Idempotent-Replayed: true
    decision: dict[str, Any] | None = None  # /v1/check: the fields that matter here
    customer: str | None = None


@dataclass
class Result:
    """A request's last answer, after retries (None: no answer before the deadline)."""

    response: httpx.Response | None
    attempts: int
    failed_attempts: int  # transport errors, 503s, 409 in-flight before the answer

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code

    def json(self) -> Any:
        assert self.response is not None
        return self.response.json()


@dataclass
class Ledger:
    """What the load sent and what was acknowledged."""

    records: list[Record] = field(default_factory=list)
    seats: dict[str, tuple[str, str]] = field(default_factory=dict)  # subject -> (customer, id)
    seats_refused: set[str] = field(default_factory=set)
    seats_unanswered: set[str] = field(default_factory=set)
    released: set[str] = field(default_factory=set)
    releases_unanswered: set[str] = field(default_factory=set)
    released_at: dict[str, float] = field(default_factory=dict)  # subject -> perf_counter
    instances: dict[str, tuple[str, str]] = field(default_factory=dict)  # fp -> (customer, id)
    instances_refused: set[str] = field(default_factory=set)
    instances_unanswered: set[str] = field(default_factory=set)
    deregistered: set[str] = field(default_factory=set)
    events: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (customer, count)
    events_acked: set[str] = field(default_factory=set)
    events_accepted: int = 0  # Σ `accepted` over the acknowledged batches
    events_duplicates: int = 0  # Σ `duplicates`: ids a lost answer had already committed
    consumed: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (customer, dec)
    consumes_unanswered: set[str] = field(default_factory=set)
    replays: collections.Counter[str] = field(default_factory=collections.Counter)
    in_flight_conflicts: int = 0  # 409 idempotency-in-flight: a retry met its first attempt
    violations: list[str] = field(default_factory=list)

    def of(self, *kinds: str) -> list[Record]:
        return [r for r in self.records if r.kind in kinds]

    def statuses(self, *kinds: str, where: Callable[[Record], bool] | None = None) -> dict:
        counted = collections.Counter(
            str(r.status) for r in self.records if r.kind in kinds and (where is None or where(r))
        )
        return dict(sorted(counted.items()))

    def summary(self) -> dict[str, Any]:
        by_kind = collections.Counter(r.kind for r in self.records)
        latency = sorted(r.done - r.sent for r in self.records if r.kind == "check")
        return {
            "check latency ms p50/p99": [
                round(1000 * latency[len(latency) // 2], 1) if latency else None,
                round(1000 * latency[int(len(latency) * 0.99)], 1) if latency else None,
            ],
            "attempts": len(self.records),
            "by_kind": dict(sorted(by_kind.items())),
            "checks": self.statuses("check"),
            "writes": self.statuses(*WRITES),
            "seats granted": len(self.seats),
            "seats refused": len(self.seats_refused),
            "seats released": len(self.released),
            "instances registered": len(self.instances),
            "instances refused": len(self.instances_refused),
            "events sent": len(self.events),
            "events acknowledged": len(self.events_acked),
            "events duplicates reported": self.events_duplicates,
            "consumed": len(self.consumed),
            "idempotent replays": dict(self.replays),
            "409 idempotency-in-flight": self.in_flight_conflicts,
        }


class Load:
    def __init__(
        self,
        urls: list[str],
        headers: dict[str, str],
        *,
        write_customers: list[str],
        read_customers: list[str],
        prefix: str,
        release_at: int,
        retry_deadline_s: float = 45.0,
        seed: int = 7,
    ) -> None:
        self.urls = urls
        self.headers = headers
        self.write_customers = write_customers
        self.read_customers = read_customers
        self.prefix = prefix
        self.release_at = release_at
        self.retry_deadline_s = retry_deadline_s
        self.random = random.Random(seed)
        self.ledger = Ledger()
        self.inflight = [0] * len(urls)
        self.inflight_writes = [0] * len(urls)
        self._turn = itertools.count()
        self._ids = itertools.count(1)
        self._held: dict[str, collections.deque[str]] = {
            c: collections.deque() for c in write_customers
        }
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[httpx.AsyncClient] = []

    # -- running ---------------------------------------------------------------------------

    async def __aenter__(self) -> Load:
        # Idle connections are dropped well before uvicorn closes them (its keep-alive timeout
        # is 5 s, httpx's default expiry too): a request sent on a connection the server is
        # closing at that moment fails with ReadError, a race of HTTP/1.1 keep-alive that
        # says nothing about the service (seen under heavy machine load).
        limits = httpx.Limits(
            max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0
        )
        self._clients = [
            httpx.AsyncClient(base_url=url, headers=self.headers, timeout=15.0, limits=limits)
            for url in self.urls
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            await client.aclose()

    def start(self) -> None:
        spawn = [
            *(self._checks for _ in range(CHECK_TASKS)),
            *(self._seats for _ in range(SEAT_TASKS)),
            *(self._instances for _ in range(INSTANCE_TASKS)),
            *(self._events for _ in range(EVENT_TASKS)),
            *(self._consumes for _ in range(CONSUME_TASKS)),
        ]
        self._tasks = [
            asyncio.create_task(make(n), name=f"load-{make.__name__}-{n}")
            for n, make in enumerate(spawn)
        ]

    async def stop(self, within: float = 60.0) -> None:
        """Start nothing new; let every request in progress finish its retries."""
        self._stopping.set()
        done, pending = await asyncio.wait(self._tasks, timeout=within)
        assert not pending, f"{len(pending)} load tasks still retrying after {within}s"
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def attempts_in(self, kinds: tuple[str, ...], since: float) -> int:
        return sum(1 for r in self.ledger.records if r.kind in kinds and r.done >= since)

    async def until(self, predicate: Callable[[], bool], within: float) -> None:
        deadline = time.perf_counter() + within
        while not predicate():
            assert time.perf_counter() < deadline, "the load did not get there in time"
            await asyncio.sleep(0.01)

    # -- one request, with the retries a careful client makes ------------------------------

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry_status: bool = True,
        customer: str | None = None,
    ) -> Result:
        deadline = time.perf_counter() + self.retry_deadline_s
        worker = next(self._turn) % len(self.urls)
        attempt = failed = 0
        delay = 0.02
        write = kind in WRITES
        while True:
            attempt += 1
            client = self._clients[worker]
            sent = time.perf_counter()
            self.inflight[worker] += 1
            self.inflight_writes[worker] += write
            try:
                response = await client.request(
                    method, path, json=json, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                response = None
                status: int | str = f"conn:{type(exc).__name__}"
            finally:
                self.inflight[worker] -= 1
                self.inflight_writes[worker] -= write
            record = Record(kind, worker, sent, time.perf_counter(), 0, attempt, customer=customer)
            retry = response is None
            if response is not None:
                status = response.status_code
                record.retry_after = response.headers.get("retry-after")
                record.problem = response.headers.get("content-type", "").startswith(
                    "application/problem+json"
                )
                record.replayed = response.headers.get("idempotent-replayed") == "true"
                if status == 503:
                    retry = retry_status
                    if not record.retry_after or int(record.retry_after) <= 0:
                        self.ledger.violations.append(f"{kind} 503 without Retry-After")
                elif status == 409 and response.json().get("type") == IN_FLIGHT:
                    retry = retry_status
                    self.ledger.in_flight_conflicts += 1
                elif status >= 500:
                    self.ledger.violations.append(
                        f"{kind} {method} {path}: {status} {response.text}"
                    )
                if kind == "check" and status == 200:
                    body = response.json()
                    record.decision = {
                        k: body.get(k)
                        for k in ("allowed", "reason", "stale", "cache_ttl_s", "feature")
                    }
                    record.decision["subject"] = (json or {}).get("subject")
            record.status = status
            self.ledger.records.append(record)
            if record.replayed:
                self.ledger.replays[kind] += 1
            if not retry or time.perf_counter() > deadline:
                return Result(None if retry else response, attempt, failed)
            failed += 1
            worker = (worker + 1) % len(self.urls)  # the next worker: this one may be gone
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _next_id(self, what: str) -> str:
        return f"{self.prefix}-{what}-{next(self._ids)}"

    # -- the tasks --------------------------------------------------------------------------

    async def _checks(self, n: int) -> None:
        customers = self.write_customers + self.read_customers
        while not self._stopping.is_set():
            customer = customers[self.random.randrange(len(customers))]
            roll = self.random.random()
            body: dict[str, Any] = {"customer": customer, "feature": "reports"}
            if roll < 0.3 and customer in self._held:
                held = self._held[customer]
                subject = held[-1] if held else f"{self.prefix}-nobody"
                body = {"customer": customer, "feature": "editor", "subject": subject}
            elif roll < 0.45:
                body = {"customer": customer, "feature": "api"}
            result = await self.call("check", "POST", "/v1/check", json=body, customer=customer)
            if result.status != 200:
                self.ledger.violations.append(f"check unanswered or failed: {result.status}")
            await asyncio.sleep(0.004)

    async def _seats(self, n: int) -> None:
        while not self._stopping.is_set():
            customer = self.write_customers[self.random.randrange(len(self.write_customers))]
            subject = self._next_id("user")
            result = await self.call(
                "seat",
                "POST",
                f"/v1/customers/{customer}/seats",
                json={"subject": subject},
                headers={"Idempotency-Key": f"seat:{subject}"},
                customer=customer,
            )
            refused = False
            if result.status in (200, 201):
                seat = result.json()
                assert seat["subject"] == subject
                self.ledger.seats[subject] = (customer, seat["id"])
                self._held[customer].append(subject)
            elif result.status == 409 and result.json().get("reason") == "seat_limit_reached":
                self.ledger.seats_refused.add(subject)
                refused = True
            elif result.response is None:
                self.ledger.seats_unanswered.add(subject)
            else:
                self.ledger.violations.append(f"seat: {result.status} {result.response.text}")
            held = self._held[customer]
            if held and (refused or len(held) >= self.release_at):
                await self._release(customer, held.popleft())
            await asyncio.sleep(0.01)

    async def _release(self, customer: str, subject: str) -> None:
        result = await self.call(
            "release", "DELETE", f"/v1/customers/{customer}/seats/{subject}", customer=customer
        )
        # A 404 is what a retry gets when the attempt that failed had in fact committed.
        if result.status == 204 or (result.status == 404 and result.failed_attempts):
            self.ledger.released.add(subject)
            self.ledger.released_at[subject] = time.perf_counter()
        elif result.response is None:
            self.ledger.releases_unanswered.add(subject)
        else:
            self.ledger.violations.append(f"release: {result.status} {result.response.text}")

    async def _instances(self, n: int) -> None:
        while not self._stopping.is_set():
            customer = self.write_customers[self.random.randrange(len(self.write_customers))]
            fingerprint = self._next_id("host")
            kind = "cluster" if self.random.random() < 0.34 else "vm"
            result = await self.call(
                "instance",
                "POST",
                f"/v1/customers/{customer}/instances",
                json={"fingerprint": fingerprint, "kind": kind, "environment": "prod"},
                headers={"Idempotency-Key": f"instance:{fingerprint}"},
                customer=customer,
            )
            if result.status in (200, 201):
                instance_id = result.json()["id"]
                self.ledger.instances[fingerprint] = (customer, instance_id)
                for _ in range(HEARTBEATS):
                    await asyncio.sleep(0.05)
                    beat = await self.call(
                        "heartbeat", "POST", f"/v1/instances/{instance_id}/heartbeat"
                    )
                    if beat.status != 200 and beat.response is not None:
                        self.ledger.violations.append(
                            f"heartbeat: {beat.status} {beat.response.text}"
                        )
                ended = await self.call("deregister", "DELETE", f"/v1/instances/{instance_id}")
                if ended.status == 204 or (ended.status == 410 and ended.failed_attempts):
                    self.ledger.deregistered.add(fingerprint)
                elif ended.response is not None:
                    self.ledger.violations.append(f"deregister: {ended.status}")
            elif result.status == 409 and result.json().get("reason") == "instance_limit_reached":
                self.ledger.instances_refused.add(fingerprint)
            elif result.response is None:
                self.ledger.instances_unanswered.add(fingerprint)
            else:
                self.ledger.violations.append(f"instance: {result.status} {result.response.text}")
            await asyncio.sleep(0.02)

    async def _events(self, n: int) -> None:
        while not self._stopping.is_set():
            customer = self.write_customers[self.random.randrange(len(self.write_customers))]
            batch: list[dict[str, Any]] = []
            for _ in range(EVENTS_PER_BATCH):
                event_id = self._next_id("evt")
                count = self.random.randint(1, 5)
                self.ledger.events[event_id] = (customer, count)
                batch.append(
                    {
                        "specversion": "1.0",
                        "id": event_id,
                        "source": SOURCE,
                        "type": "api.call",
                        "subject": customer,
                        "time": isoformat(utcnow()),
                        "data": {"count": count},
                    }
                )
            result = await self.call(
                "events",
                "POST",
                "/v1/events",
                content=orjson.dumps(batch),
                headers={"Content-Type": BATCH},
                customer=customer,
            )
            if result.status == 200:
                answer = result.json()
                if answer["rejected"]:
                    self.ledger.violations.append(f"events rejected: {answer['rejected'][:2]}")
                self.ledger.events_acked.update(event["id"] for event in batch)
                self.ledger.events_accepted += answer["accepted"]
                self.ledger.events_duplicates += answer["duplicates"]
            elif result.response is not None:
                self.ledger.violations.append(f"events: {result.status} {result.response.text}")
            await asyncio.sleep(0.02)

    async def _consumes(self, n: int) -> None:
        while not self._stopping.is_set():
            customer = self.write_customers[self.random.randrange(len(self.write_customers))]
            key = self._next_id("consume")
            result = await self.call(
                "consume",
                "POST",
                "/v1/check",
                json={"customer": customer, "feature": "api", "consume": 1},
                headers={"Idempotency-Key": key},
                customer=customer,
            )
            if result.status == 200:
                answer = result.json()
                if answer["allowed"] and answer.get("consumed") == 1:
                    self.ledger.consumed[key] = (customer, answer["decision_id"])
                else:
                    # Far under its limit a consume is allowed and counted, or it is a 503:
                    # anything else (an outage answer, allowed without `consumed`) is not a
                    # decided consume, yet is stored for the key (tests/faults/test_known_bugs).
                    self.ledger.violations.append(f"consume answered undecided: {answer}")
            elif result.response is None:
                self.ledger.consumes_unanswered.add(key)
            else:
                self.ledger.violations.append(f"consume: {result.status} {result.response.text}")
            await asyncio.sleep(0.02)


# -- the sampler ------------------------------------------------------------------------------

SAMPLE = (
    "SELECT c.key, "
    "(SELECT count(*) FROM seats s WHERE s.customer_id = c.id AND s.type = 'member' "
    " AND s.released_at IS NULL), "
    "(SELECT coalesce(sum(i.weight), 0) FROM instances i WHERE i.customer_id = c.id "
    " AND i.ended_at IS NULL AND i.lease_expires_at > now()) "
    "FROM customers c WHERE c.key = ANY(%(keys)s)"
)


@dataclass
class Sampler:
    """Polls the live pools over its own connection until stopped."""

    database_url: str
    customers: list[str]
    seat_cap: int
    instance_cap: int
    samples: int = 0
    skipped: int = 0  # polls that found PostgreSQL unreachable
    peak_seats: int = 0
    peak_weight: int = 0
    over: list[tuple[str, int, int]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sampler")

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = await psycopg.AsyncConnection.connect(
                        self.database_url, autocommit=True, connect_timeout=2
                    )
                cursor = await conn.execute(SAMPLE, {"keys": self.customers})
                rows = await cursor.fetchall()
            except psycopg.Error:
                self.skipped += 1
                if conn is not None:
                    await conn.close()
                    conn = None
                await asyncio.sleep(0.05)
                continue
            self.samples += 1
            for key, seats, weight in rows:
                self.peak_seats = max(self.peak_seats, int(seats))
                self.peak_weight = max(self.peak_weight, int(weight))
                if seats > self.seat_cap or weight > self.instance_cap:
                    self.over.append((key, int(seats), int(weight)))
            await asyncio.sleep(0.005)
        if conn is not None:
            await conn.close()

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "skipped while down": self.skipped,
            "peak live seats": f"{self.peak_seats}/{self.seat_cap}",
            "peak live weight": f"{self.peak_weight}/{self.instance_cap}",
            "over a cap": len(self.over),
        }
