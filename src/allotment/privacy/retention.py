"""Retention (docs/privacy.md): what `allotment worker` purges on every pass.

    decisions       the decision log's records decided before now − ALLOTMENT_DECISIONS_RETENTION
    usage events    raw events whose time is before now − ALLOTMENT_EVENTS_RETENTION (counters,
                    unique sets and the newest event of each series kept: usage/retention.py)

A row exactly at the cutoff is kept. Each batch is a short transaction of its own; any
number of workers may purge at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.check import decisions
from allotment.config import Settings
from allotment.db import session_scope
from allotment.usage import retention as usage_retention

Purge = Callable[..., Awaitable[int]]


async def purge(
    maker: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime, batch: int
) -> dict[str, int]:
    """Purge everything past its retention at `now`, in batches: how many rows of each."""
    jobs: tuple[tuple[str, Purge, datetime], ...] = (
        ("decisions_purged", decisions.purge, now - settings.decisions_retention),
        ("events_purged", usage_retention.purge, now - settings.events_retention),
    )
    done: dict[str, int] = {}
    for name, job, before in jobs:
        done[name] = 0
        while True:
            async with session_scope(maker) as session:
                purged = await job(session, before=before, batch=batch)
            done[name] += purged
            if purged < batch:
                break
    return done
