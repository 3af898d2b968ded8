"""The decision log: every denial and a sample of allows, written off the request path.

`DecisionLog.record()` never blocks and never fails a check: it appends to a bounded
in-memory queue; a background task writes batches. When the queue is full (overload) or
the database is down, records are dropped and counted (`allotment_decisions_dropped_total`),
never the checks themselves. A record's subject is stored as its pseudonym, computed by the
writer (docs/privacy.md); the worker purges records older than
`ALLOTMENT_DECISIONS_RETENTION` (privacy/retention.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Boolean, DateTime, Index, Integer, Text, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from allotment.check.metrics import DECISIONS_DROPPED
from allotment.db import Base, session_scope
from allotment.kit.slicing import TimeSlice
from allotment.privacy.pseudonyms import Pseudonyms
from allotment.privacy.pseudonyms import default as default_pseudonyms

log = structlog.get_logger("allotment.decisions")


class DecisionRecord(Base):
    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_customer", "customer", "allowed", "id"),
        Index("ix_decisions_at", "at"),  # the retention purge (migration 0023)
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # dec_<ULID>: sortable by time
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    customer: Mapped[str] = mapped_column(Text)
    feature: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    instance: Mapped[str | None] = mapped_column(Text, nullable=True)
    tenant: Mapped[str | None] = mapped_column(Text, nullable=True)
    allowed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    policy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    contract_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stale: Mapped[bool] = mapped_column(Boolean, default=False)


COLUMNS = (
    "id",
    "at",
    "customer",
    "feature",
    "subject",
    "instance",
    "tenant",
    "allowed",
    "reason",
    "detail",
    "policy_version",
    "contract_revision",
    "stale",
)
_COPY = f"COPY decisions ({', '.join(COLUMNS)}) FROM STDIN"


class DecisionLog:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        *,
        sample_rate: float,
        capacity: int = 20_000,
        # Rows per COPY: each costs a handful of round trips, and under load every round
        # trip waits a turn of the event loop, so small batches cap the rate (250 rows gave
        # ~3,000 rows/s under a saturated check load). Formatting yields every 2 ms.
        batch_size: int = 2_000,
        interval_s: float = 0.1,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self.maker = maker
        self._pseudonyms = pseudonyms  # None: the environment's (a log built outside the app)
        self.sample_rate = sample_rate
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.dropped = 0
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._random = random.random

    def wants(self, allowed: bool) -> bool:
        """Whether to build a record of this decision: every denial and a sample of allows,
        while the queue has room. A full queue drops (and counts) it here, before the
        checker builds a record only to have it dropped."""
        if allowed and self._random() >= self.sample_rate:
            return False
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            DECISIONS_DROPPED.inc()
            return False
        return True

    def record(self, row: dict[str, Any]) -> None:
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            DECISIONS_DROPPED.inc()
            return
        self._queue.append(row)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="allotment-decision-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=2.0)

    async def flush(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            try:
                await self._copy(batch)
            except Exception as exc:  # an outage costs log records, never checks
                self.dropped += len(batch)
                DECISIONS_DROPPED.inc(len(batch))
                log.warning("decision_log_write_failed", dropped=len(batch), error=str(exc))
                return

    async def _copy(self, batch: list[dict[str, Any]]) -> None:
        # COPY through the driver: an ORM bulk insert of the same rows costs ~10x the CPU,
        # all of it on the event loop that serves checks.
        async with session_scope(self.maker) as session:
            connection = await session.connection()
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            async with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
                pause = TimeSlice().pause  # checks go on between slices
                for row in batch:
                    await copy.write_row(self._stored(row))
                    await pause()

    def _stored(self, row: dict[str, Any]) -> list[Any]:
        """The row as stored: the subject's pseudonym in place of the subject, also in the
        detail that names it (docs/privacy.md). Done here, off the check's path."""
        subject = row["subject"]
        if subject is not None:
            ref = (self._pseudonyms or default_pseudonyms()).of(row["customer"], subject)
            detail = row["detail"]
            row = {**row, "subject": ref}
            if detail is not None:  # the gates name a subject quoted (check/gates.py)
                row["detail"] = detail.replace(f"'{subject}'", f"'{ref}'")
        return [row[column] for column in COLUMNS]

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            self._wake.clear()
            await self.flush()


_ERASE = text(
    "UPDATE decisions SET subject = :ref, detail = replace(detail, :quoted, :quoted_ref) "
    "WHERE customer = :customer AND subject = :s AND subject <> :ref"
)
_PURGE = text(
    "DELETE FROM decisions WHERE id IN (SELECT id FROM decisions WHERE at < :before LIMIT :batch)"
)


async def erase_subject(session: AsyncSession, *, customer_key: str, subject: str, ref: str) -> int:
    """Records written with the raw subject (before pseudonyms: migration 0023) take its
    pseudonym; newer ones already hold it."""
    params = {
        "customer": customer_key,
        "s": subject,
        "ref": ref,
        "quoted": f"'{subject}'",
        "quoted_ref": f"'{ref}'",
    }
    result = await session.execute(_ERASE, params)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge(session: AsyncSession, *, before: datetime, batch: int) -> int:
    """Delete up to `batch` records decided before `before` (the retention: the worker)."""
    result = await session.execute(_PURGE, {"before": before, "batch": batch})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
