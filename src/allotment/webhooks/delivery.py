"""Delivery of the outbox by `allotment worker` (docs/webhooks.md, "Delivery").

    DeliveryLoop(maker, settings, database_url=…).run(stop)   until `stop` is set
    DeliveryLoop(…).drain()                                    what is due now, then return

A pass claims due deliveries in one statement: `FOR UPDATE SKIP LOCKED` picks rows no other
worker is claiming, and the claim writes a lease (`lease_until`, `lease_owner`) and the
attempt, open (`in_flight`), and commits before anything is sent. So any number of workers
share the queue, each delivery is sent by one at a time (the lease outlasts the attempt's
timeout), and a worker killed mid-send leaves a lease that lapses, after which the delivery
is claimed again: at least once. That claim closes the attempt the dead worker left open as
`interrupted` (webhooks/sweep.py closes those no claim comes for). The delivery's outcome is
recorded only by the lease holder (`lease_owner` and `attempts` as claimed).

The loop sleeps until PostgreSQL notifies it (outbox.emit's NOTIFY, sent at commit), a sent
delivery frees a slot, or `webhooks_poll_s` passes. Every wake claims whatever is due,
notified or not, so the poll is also the reconciliation sweep: retries falling due, leases
lapsed, and messages whose NOTIFY no loop heard (none listening at the commit, a dropped
connection) go out within `webhooks_poll_s` (docs/webhooks.md, "Delivery").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.config import Settings
from allotment.db import libpq_url, session_scope
from allotment.kit.clock import utcnow
from allotment.kit.ids import ulid
from allotment.webhooks import metrics, outbox, schedule, signature, sweep, targets
from allotment.webhooks.service import secrets_sealer

log = structlog.get_logger("allotment.webhooks")

USER_AGENT = "Allotment-Webhooks/1"
# A lease outlasts the attempt's timeout by half as much again: recording the outcome takes
# a moment, and another worker must not claim the delivery meanwhile.
LEASE_OVER_TIMEOUT = 1.5

# The claim also opens each delivery's attempt (`in_flight`, so a worker killed before it
# records the answer still leaves the attempt in the log) and closes as `interrupted` the
# attempt a dead worker left open on it. All data-modifying parts run, read or not.
_CLAIM = text(
    """
    WITH claimed AS (
        UPDATE webhook_deliveries d
        SET lease_until = :lease_until, lease_owner = :owner, attempts = d.attempts + 1
        FROM (
            SELECT due.id FROM webhook_deliveries due
            JOIN webhook_endpoints target ON target.id = due.endpoint_id
            WHERE due.state = 'pending' AND due.next_attempt_at <= :due_by
              AND (due.lease_until IS NULL OR due.lease_until <= :now)
              AND target.enabled AND (target.slowed_until IS NULL OR target.slowed_until <= :now)
            ORDER BY due.next_attempt_at
            LIMIT :limit
            FOR UPDATE OF due SKIP LOCKED
        ) AS claimed, webhook_messages m, webhook_endpoints e
        WHERE d.id = claimed.id AND m.id = d.message_id AND e.id = d.endpoint_id
        RETURNING d.id, d.message_id, d.endpoint_id, d.attempts, d.created_at, d.retried_at,
                  m.created_at AS message_at, m.body, e.url, e.secret_sealed,
                  e.previous_secret_sealed, e.previous_secret_until
    ), interrupted AS (
        UPDATE webhook_attempts a SET outcome = 'interrupted', error = :interrupted
        FROM claimed WHERE a.delivery_id = claimed.id AND a.outcome = 'in_flight'
        RETURNING a.delivery_id
    ), started AS (
        INSERT INTO webhook_attempts (delivery_id, attempted_at, outcome)
        SELECT claimed.id, :now, 'in_flight' FROM claimed
        RETURNING id, delivery_id
    )
    SELECT claimed.*, started.id AS attempt_id,
           (SELECT count(*) FROM interrupted WHERE interrupted.delivery_id = claimed.id)
               AS interrupted
    FROM claimed JOIN started ON started.delivery_id = claimed.id
    """
)
# The delivery, locked while its attempt is recorded: gone when its endpoint was deleted
# meanwhile (the cascade waits for this lock otherwise).
_HELD = text("SELECT id FROM webhook_deliveries WHERE id = :id FOR UPDATE")
# Closed with what it got, whoever closed it meanwhile: an attempt marked interrupted by a
# worker that took over a lapsed lease did get an answer after all.
_CLOSE = text(
    """
    UPDATE webhook_attempts
    SET outcome = :outcome, attempted_at = :at, duration_ms = :duration_ms, status = :status,
        error = :error
    WHERE id = :attempt_id
    """
)
_SETTLE = text(
    """
    UPDATE webhook_deliveries
    SET state = :state, next_attempt_at = coalesce(:due, next_attempt_at),
        delivered_at = :delivered_at, lease_until = NULL, lease_owner = NULL,
        last_status = :status, last_error = :error
    WHERE id = :id AND lease_owner = :owner AND attempts = :attempts
    """
)
_SLOW = text(
    """
    UPDATE webhook_endpoints SET slowed_until = greatest(coalesce(slowed_until, :until), :until)
    WHERE id = :id
    """
)
_GONE = text(
    """
    UPDATE webhook_endpoints SET enabled = false, disabled_reason = :reason, updated_at = :now
    WHERE id = :id AND enabled
    """
)


@dataclass(frozen=True)
class Claimed:
    id: str
    message_id: str
    endpoint_id: str
    attempts: int
    created_at: datetime
    retried_at: datetime | None
    message_at: datetime
    body: str
    url: str
    secret_sealed: bytes
    previous_secret_sealed: bytes | None
    previous_secret_until: datetime | None
    attempt_id: int  # the attempt opened by the claim (`in_flight`)
    interrupted: int  # open attempts of an earlier claim this one closed as `interrupted`


@dataclass(frozen=True)
class Answer:
    """What one attempt got: a status (and Retry-After), or an error and no status."""

    status: int | None
    error: str | None
    retry_after: str | None
    duration_ms: int
    at: datetime


class DeliveryLoop:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        database_url: str,
        owner: str | None = None,
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.database_url = database_url
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{ulid()[-6:]}"
        self.sealer = secrets_sealer(settings)
        self.lease_s = max(
            settings.webhooks_lease_s, settings.webhooks_timeout_s * LEASE_OVER_TIMEOUT
        )
        self.wake = asyncio.Event()
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=settings.webhooks_timeout_s,
            headers={"user-agent": USER_AGENT},
            limits=httpx.Limits(max_connections=settings.webhooks_concurrency * 2),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def claim(self, limit: int, *, due_by: datetime | None = None) -> list[Claimed]:
        """Up to `limit` deliveries due by `due_by` (default: now), leased to this loop."""
        now = utcnow()
        async with session_scope(self.maker) as session:
            rows = await session.execute(
                _CLAIM,
                {
                    "now": now,
                    "due_by": due_by or now,
                    "lease_until": now + timedelta(seconds=self.lease_s),
                    "owner": self.owner,
                    "limit": limit,
                    "interrupted": sweep.INTERRUPTED,
                },
            )
            claimed = [Claimed(**row._mapping) for row in rows]
        for item in claimed:
            if item.interrupted:
                log.info("webhook_attempt_interrupted", delivery=item.id, closed=item.interrupted)
                metrics.ATTEMPTS.labels(outcome="interrupted").inc(item.interrupted)
        return claimed

    async def send(self, item: Claimed) -> Answer:
        at = utcnow()
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: str | None = None
        try:
            async with asyncio.timeout(self.settings.webhooks_timeout_s):  # the name's lookup too
                request = await self._request(item, at=at)
                response = await self.client.send(request, stream=True)
                await response.aclose()  # the body is not read: only the status counts
            status = response.status_code
            retry_after = response.headers.get("retry-after")
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except targets.TargetRefused as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"no answer within {self.settings.webhooks_timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # e.g. the secret does not open: recorded, retried, logged
            log.exception("webhook_attempt_failed", delivery=item.id)
            error = f"not sent: {type(exc).__name__}: {exc}"
        duration_ms = int((time.perf_counter() - started) * 1000)
        return Answer(status, error, retry_after, duration_ms, at)

    async def _request(self, item: Claimed, *, at: datetime) -> httpx.Request:
        target = targets.check_url(item.url)
        addresses = await targets.resolve(
            target, allow_private=self.settings.webhooks_allow_private
        )
        secrets = [self.sealer.open(item.secret_sealed, kid=item.endpoint_id).decode()]
        if item.previous_secret_sealed is not None and (
            item.previous_secret_until is not None and item.previous_secret_until > at
        ):
            secrets.append(
                self.sealer.open(item.previous_secret_sealed, kid=item.endpoint_id).decode()
            )
        headers = signature.headers(item.message_id, int(at.timestamp()), item.body, secrets)
        url = httpx.URL(item.url)
        # Connect to the address just checked, not to whatever the name resolves to next.
        headers["host"] = url.netloc.decode("ascii")
        extensions: dict[str, Any] = {}
        if url.scheme == "https":
            extensions["sni_hostname"] = target.host
        return self.client.build_request(
            "POST",
            url.copy_with(host=addresses[0]),
            content=item.body.encode(),
            headers=headers,
            extensions=extensions,
        )

    async def settle(self, item: Claimed, answer: Answer) -> str:
        """Record the attempt and what follows; the outcome's name (for the metrics), or
        "deleted" when the endpoint was deleted while it was sent (nothing to record)."""
        settings = self.settings
        now = utcnow()
        delivered = answer.status is not None and 200 <= answer.status < 300
        due: datetime | None = None
        async with session_scope(self.maker) as session:
            if (await session.execute(_HELD, {"id": item.id})).first() is None:
                log.info("webhook_settle_skipped", delivery=item.id, reason="endpoint deleted")
                return "deleted"
            await session.execute(
                _CLOSE,
                {
                    "attempt_id": item.attempt_id,
                    "outcome": "delivered" if delivered else "failed",
                    "at": answer.at,
                    "duration_ms": answer.duration_ms,
                    "status": answer.status,
                    "error": answer.error,
                },
            )
            if delivered:
                outcome = "delivered"
            else:
                not_before = None
                outcome = "retried"
                if answer.status == schedule.GONE:
                    outcome = "gone"
                    await session.execute(
                        _GONE,
                        {
                            "id": item.endpoint_id,
                            "now": now,
                            "reason": f"answered 410 Gone at {now.isoformat()}",
                        },
                    )
                elif answer.status in schedule.SLOWING:
                    pause = schedule.retry_after_s(answer.retry_after, now=now)
                    not_before = now + timedelta(
                        seconds=settings.webhooks_slow_s if pause is None else pause
                    )
                    await session.execute(_SLOW, {"id": item.endpoint_id, "until": not_before})
                elif answer.status is None and (answer.error or "").startswith("refused"):
                    outcome = "refused"
                due = schedule.next_attempt(
                    now=now,
                    attempts=item.attempts,
                    window_start=item.retried_at or item.created_at,
                    base_s=settings.webhooks_backoff_base_s,
                    cap_s=settings.webhooks_backoff_cap_s,
                    window_s=settings.webhooks_retry_window_s,
                    not_before=not_before,
                )
                if due is None:
                    outcome = "given_up"
            await session.execute(
                _SETTLE,
                {
                    "id": item.id,
                    "owner": self.owner,
                    "attempts": item.attempts,
                    "state": "delivered" if delivered else ("failed" if due is None else "pending"),
                    "due": due,
                    "delivered_at": now if delivered else None,
                    "status": answer.status,
                    "error": answer.error,
                },
            )
        metrics.ATTEMPTS.labels(outcome=outcome).inc()
        if delivered:
            metrics.DELIVERY_SECONDS.observe(max((now - item.message_at).total_seconds(), 0.0))
        return outcome

    async def deliver(self, item: Claimed) -> None:
        answer = await self.send(item)
        try:
            await self.settle(item, answer)
        except Exception:  # the lease lapses and the delivery is tried again
            log.exception("webhook_settle_failed", delivery=item.id)

    async def drain(self) -> int:
        """Send everything due now (as one worker would; retries falling due meanwhile are
        left for later), then return how many were tried."""
        tried = 0
        started = utcnow()
        while True:
            claimed = await self.claim(self.settings.webhooks_concurrency, due_by=started)
            if not claimed:
                return tried
            await asyncio.gather(*(self.deliver(item) for item in claimed))
            tried += len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop))
        in_flight: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            self.wake.set()

        try:
            while not stop.is_set():
                self.wake.clear()
                free = self.settings.webhooks_concurrency - len(in_flight)
                claimed: list[Claimed] = []
                if free > 0:
                    try:
                        claimed = await self.claim(free)
                    except Exception as exc:  # PostgreSQL away: poll again
                        log.warning("webhook_claim_failed", error=str(exc))
                for item in claimed:
                    task = asyncio.create_task(self.deliver(item))
                    in_flight.add(task)
                    task.add_done_callback(finished)
                if claimed and len(claimed) == free:
                    continue  # a full batch: more may be due
                stopping = asyncio.create_task(stop.wait())
                woken = asyncio.create_task(self.wake.wait())
                await asyncio.wait(
                    {stopping, woken},
                    timeout=self.settings.webhooks_poll_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                stopping.cancel()
                woken.cancel()
        finally:
            listener.cancel()
            if in_flight:  # let what is being sent finish, within its timeout
                await asyncio.wait(in_flight, timeout=self.settings.webhooks_timeout_s + 1)
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, stop: asyncio.Event) -> None:
        """Set `wake` on every NOTIFY on outbox.CHANNEL; reconnect after a failure."""
        while not stop.is_set():
            try:
                connection = await psycopg.AsyncConnection.connect(
                    libpq_url(self.database_url), autocommit=True, connect_timeout=5
                )
                async with connection:
                    await connection.execute(f"LISTEN {outbox.CHANNEL}")
                    self.wake.set()  # whatever was notified while not listening
                    async for _ in connection.notifies():
                        self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook_listen_failed", error=str(exc))
                await asyncio.sleep(1.0)
