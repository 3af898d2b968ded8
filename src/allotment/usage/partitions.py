"""Monthly partitions of `usage_events`: created ahead by the worker, and on demand.

A partition is `usage_events_yYYYYmMM` for [first of the month, first of the next), UTC.
Every API process makes those of the late-arrival window and the next two months when it
starts (`startup`), and the worker keeps two months ahead, so creating one on demand — DDL
that must wait for every transaction writing to the table — is the rare exception.
Creation runs in its own short transaction, on its own connection outside the pool, under
an advisory lock (`CREATE TABLE IF NOT
EXISTS … PARTITION OF` is not safe to race on its own), never inside an ingest transaction,
so a batch never holds DDL locks. Each process remembers, per database, the months it knows
exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from allotment.db import libpq_url

_LOCK = 0x616C6C6F  # "allo": one advisory lock key for partition DDL
_EXISTING = "SELECT relname FROM pg_class WHERE relname = ANY(%s::text[])"
_known: dict[str, set[tuple[int, int]]] = {}  # by database URL


_rendered: dict[int, tuple[URL, str]] = {}


def _database(url: URL) -> str:
    """The key of `_known`, remembered by the URL object's identity: rendering a URL (also
    what hashing one does) costs more than the rest of a known-month `ensure`, which runs
    in every seat assignment."""
    found = _rendered.get(id(url))
    if found is None or found[0] is not url:
        found = _rendered[id(url)] = (url, url.render_as_string(hide_password=True))
    return found[1]


def _month(moment: datetime) -> tuple[int, int]:
    moment = moment.astimezone(UTC)
    return moment.year, moment.month


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def name(year: int, month: int) -> str:
    return f"usage_events_y{year:04d}m{month:02d}"


def months_ahead(now: datetime, ahead: int) -> list[tuple[int, int]]:
    """This month and the `ahead` after it."""
    found = [_month(now)]
    for _ in range(ahead):
        found.append(_next(*found[-1]))
    return found


async def ensure(engine: AsyncEngine, moments: Iterable[datetime]) -> int:
    """Create the partitions holding `moments` that this process has not seen; how many
    statements ran (0 when all were known)."""
    return await ensure_months(engine, {_month(m) for m in moments})


async def ensure_months(engine: AsyncEngine, months: Iterable[tuple[int, int]]) -> int:
    known = _known.setdefault(_database(engine.url), set())
    missing = sorted(set(months) - known)
    if not missing:
        return 0
    # Its own connection, outside the pool: this may run from a before-commit hook while
    # the caller's transaction holds a pooled connection, and every pooled connection may
    # be held so (no overflow), so borrowing a second could wait forever. A month is made
    # once per process, so one connect then is cheap.
    dsn = libpq_url(engine.url.render_as_string(hide_password=False))
    connecting = psycopg.AsyncConnection.connect(dsn, connect_timeout=5)
    async with await connecting as pg, pg.transaction():
        # Most often another process made them: look before taking any lock.
        names = [name(y, m) for y, m in missing]
        found = {row[0] for row in await (await pg.execute(_EXISTING, (names,))).fetchall()}
        known.update(ym for ym in missing if name(*ym) in found)
        missing = [ym for ym in missing if name(*ym) not in found]
        if not missing:
            return 0
        # DDL on the parent waits for every open transaction that wrote to it; bounded,
        # so a request that must create a partition fails fast (503) rather than hang.
        await pg.execute("SET LOCAL lock_timeout = '3s'")
        await pg.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        for year, month in missing:
            end_year, end_month = _next(year, month)
            await pg.execute(
                f"CREATE TABLE IF NOT EXISTS {name(year, month)} PARTITION OF usage_events "
                f"FOR VALUES FROM ('{year:04d}-{month:02d}-01 00:00:00+00') "
                f"TO ('{end_year:04d}-{end_month:02d}-01 00:00:00+00')"
            )
    known.update(missing)
    return len(missing)


def forget() -> None:
    """Forget what this process knows (tests that drop and recreate the schema)."""
    _known.clear()


def months_between(start: datetime, end: datetime) -> list[tuple[int, int]]:
    found = [_month(start)]
    last = _month(end)
    while found[-1] < last:
        found.append(_next(*found[-1]))
    return found


async def startup(engine: AsyncEngine, *, now: datetime, late_window_s: int, ahead: int = 2) -> int:
    """The partitions an API process may write to: back to the late-arrival window's start,
    and `ahead` months on."""
    from datetime import timedelta

    months = months_between(now - timedelta(seconds=late_window_s), now)
    months += months_ahead(now, ahead)
    return await ensure_months(engine, months)
