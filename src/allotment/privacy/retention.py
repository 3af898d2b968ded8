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

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.check import decisions
from allotment.config import Settings
from allotment.contracts import history, pools
from allotment.db import session_scope
from allotment.errors import ValidationFailed
from allotment.policy import service as policy
from allotment.usage import retention as usage_retention
from allotment.usage.retention import cut

Purge = Callable[..., Awaitable[int]]
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Kept:
    """What the raw events' retention keeps besides the newest of each series and the late
    months (usage/retention.py): the hours these instants cut, and average meters' types."""

    boundaries: list[tuple[int, datetime]]  # (customer_id, instant)
    activations: list[datetime]
    averaged: list[str]


async def kept(session: AsyncSession, *, before: datetime, customer_id: int | None = None) -> Kept:
    # an instant up to an hour past the cutoff may cut the hour the cutoff is in
    until = before + HOUR
    bounds = await history.boundaries(session, before=until, customer_id=customer_id)
    moves = await policy.activations(session, as_of=until)
    averaged = await policy.averaged_event_types(session)
    return Kept(bounds, [m.at for m in moves], averaged)


async def purge(
    maker: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime, batch: int
) -> dict[str, int]:
    """Purge everything past its retention at `now`, in batches: how many rows of each."""
    events_before = now - settings.events_retention
    async with session_scope(maker) as session:
        keep = await kept(session, before=events_before)
    events = partial(
        usage_retention.purge,
        keep=keep.boundaries,
        activations=keep.activations,
        averaged=keep.averaged,
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


async def refuse_purged_cuts(
    session: AsyncSession,
    *,
    settings: Settings,
    customer_key: str,
    event_type: str,
    instants: Mapping[str, datetime | None],
    now: datetime,
) -> None:
    """A usage read's `from` or `to` (`instants`, by query parameter) that cuts an hour
    before the raw events' cutoff is refused unless the retention keeps that hour's events
    (a contract boundary, a policy activation, an average meter): otherwise the answer
    would count what the purge left (docs/privacy.md, "Retention"). Whether the purge ran
    yet does not matter, so the same read never answers two ways."""
    before = now - settings.events_retention
    old = {}
    for path, at in instants.items():
        hours = cut([at]) if at is not None else set()
        if hours and min(hours) < before:
            old[path] = hours
    if not old:
        return
    customer_id = await pools.customer_id(session, customer_key=customer_key)
    keep = await kept(session, before=before, customer_id=customer_id)
    if event_type in keep.averaged:
        return
    safe = cut([at for _, at in keep.boundaries]) | cut(keep.activations)
    errors = [
        {
            "path": path,
            "message": "cuts an hour older than the raw events' retention "
            "(ALLOTMENT_EVENTS_RETENTION); give an instant on the hour",
        }
        for path, hours in old.items()
        if not hours <= safe
    ]
    if errors:
        raise ValidationFailed(
            "The range cuts an hour whose raw events are past their retention and may be "
            "purged, so only part of it cannot be counted; give `from` and `to` on the hour "
            "(or at a contract boundary).",
            errors=errors,
            type="usage-range-past-retention",
        )
