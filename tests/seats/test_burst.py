"""The burst window over time (service calls with an explicit clock): opening, closing,
refusing, and ending when the pool falls back under its limit."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from allotment.contracts.pools import PoolFull
from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.seats import direct
from allotment.seats import service as seats


class Seats:
    def __init__(self, app: Any) -> None:
        self.maker = app.state.sessionmaker

    async def assign(self, subject: str, at: datetime) -> seats.Assignment:
        async with session_scope(self.maker) as session:
            return await direct.assign(
                session,
                customer_key="acme",
                subject=subject,
                type="member",
                tenant=None,
                actor="test",
                now=at,
            )

    async def refused(self, subject: str, at: datetime) -> dict[str, Any]:
        with pytest.raises(PoolFull) as caught:
            await self.assign(subject, at)
        return caught.value.extra

    async def release(self, subject: str, at: datetime) -> None:
        async with session_scope(self.maker) as session:
            await seats.release(session, customer_key="acme", subject=subject, actor="t", now=at)

    async def episodes(self) -> list[Any]:
        async with session_scope(self.maker) as session:
            found = await session.execute(
                text(
                    "SELECT started_at, window_ends_at, ended_at FROM seat_bursts "
                    "ORDER BY started_at"
                )
            )
            return list(found.all())


async def test_burst_window_opens_closes_refuses_and_reopens(
    app: Any, client: httpx.AsyncClient, team: str
) -> None:
    pool = Seats(app)
    t0 = utcnow()
    for n in range(10):
        await pool.assign(f"u{n}", t0)
    over = await pool.assign("b1", t0 + timedelta(hours=1))
    assert over.burst is not None and over.seat.over_limit
    window_end = t0 + timedelta(hours=73)  # 72h from the first assignment over the limit
    assert over.burst.ends_at == window_end and over.burst.extra_left == 1
    # Inside the window: the second extra seat; its window end is the same.
    inside = await pool.assign("b2", t0 + timedelta(hours=50))
    assert inside.burst is not None and inside.burst.ends_at == window_end
    await pool.release("b2", t0 + timedelta(hours=60))  # 11 held: still over the limit
    # After the window: refused while the pool is over or at its limit.
    after = await pool.refused("b3", window_end)
    assert after["reason"] == "seat_limit_reached" and after["held"] == 11
    assert after["burst"]["ends_at"].startswith(window_end.strftime("%Y-%m-%dT%H:%M"))
    await pool.release("b1", window_end + timedelta(hours=1))  # 10 held: at the limit
    await pool.refused("b3", window_end + timedelta(hours=2))
    assert [e.ended_at for e in await pool.episodes()] == [None]
    await pool.release("u0", window_end + timedelta(hours=3))  # 9: back under, episode over
    [episode] = await pool.episodes()
    assert episode.started_at == t0 + timedelta(hours=1)
    assert episode.ended_at == window_end + timedelta(hours=3)
    # Under the limit again: a member seat, then a fresh burst with a fresh window.
    await pool.assign("u0", window_end + timedelta(hours=4))
    again = await pool.assign("b4", window_end + timedelta(hours=5))
    assert again.burst is not None
    assert again.burst.ends_at == window_end + timedelta(hours=5 + 72)
    assert len(await pool.episodes()) == 2


async def test_raising_the_limit_ends_an_open_episode(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    from tests.factories.seats import amend_seats

    pool = Seats(app)
    t0 = utcnow()
    for n in range(11):
        await pool.assign(f"u{n}", t0)
    assert (await pool.episodes())[0].ended_at is None
    before = utcnow()
    await amend_seats(client, admin, limit=20)
    # The amendment takes effect now and puts the 11 members under 20: the episode ends then.
    [episode] = await pool.episodes()
    assert episode.ended_at is not None and before <= episode.ended_at <= utcnow()
    later = utcnow() + timedelta(minutes=1)
    plain = await pool.assign("v", later)
    assert plain.burst is None and not plain.seat.over_limit
    assert (await pool.episodes())[0].ended_at == episode.ended_at


async def test_downgrade_below_held_keeps_seats_and_refuses_new_ones(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], team: str
) -> None:
    from tests.factories.seats import amend_seats, assign, check

    for n in range(6):
        assert (await assign(client, backend, f"u{n}")).status_code == 201
    await amend_seats(client, admin, limit=4, burst={"extra": 0})
    assert (await check(client, backend, "editor", subject="u5"))["allowed"] is True
    refused = await assign(client, backend, "new")
    assert refused.status_code == 409 and refused.json()["held"] == 6
    for n in range(3):
        assert (
            await client.delete(f"/v1/customers/acme/seats/u{n}", headers=backend)
        ).status_code == 204
    assert (await assign(client, backend, "new")).status_code == 201  # 3 held < 4
