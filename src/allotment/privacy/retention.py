"""Retention (docs/privacy.md): what `allotment worker` purges on every pass.

    decisions       the decision log's records decided before now − ALLOTMENT_DECISIONS_RETENTION
    usage events    raw events whose time is before now − ALLOTMENT_EVENTS_RETENTION (counters,
                    unique sets, the newest event of each series and every event a total or
                    an invoice still reads kept: the hours a contract's boundaries or a
                    policy activation cut, the months holding late events, the readings of
                    average meters; usage/retention.py)

A row exactly at the cutoff is kept. Each batch is a short transaction of its own; any
number of workers may purge at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.check import decisions
from allotment.config import Settings
from allotment.contracts import history
from allotment.db import session_scope
from allotment.policy import service as policy
from allotment.usage import retention as usage_retention

Purge = Callable[..., Awaitable[int]]
HOUR = timedelta(hours=1)


async def purge(
    maker: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime, batch: int
) -> dict[str, int]:
    """Purge everything past its retention at `now`, in batches: how many rows of each."""
    events_before = now - settings.events_retention
    async with session_scope(maker) as session:
        # an instant up to an hour past the cutoff may cut the hour the cutoff is in
        keep = await history.boundaries(session, before=events_before + HOUR)
        moves = await policy.activations(session, as_of=events_before + HOUR)
        averaged = await policy.averaged_event_types(session)
    events = partial(
        usage_retention.purge,
        keep=keep,
        activations=[m.at for m in moves],
        averaged=averaged,
    )
    jobs: tuple[tuple[str, Purge, datetime], ...] = (
        ("decisions_purged", decisions.purge, now - settings.decisions_retention),
        ("events_purged", events, events_before),
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
