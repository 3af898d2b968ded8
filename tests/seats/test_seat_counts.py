"""seat_counts, the live seats per customer that every assignment reads under the pool lock,
follows every kind of write to `seats` (the trigger of migration 0010), not just the
service's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from allotment.db import session_scope
from tests.factories.customers import create_customer

INSERT = (
    "INSERT INTO seats (id, customer_id, subject, type, tenant, over_limit, assigned_at, "
    "released_at) SELECT :id, c.id, :id, :type, NULL, false, now(), "
    "CASE WHEN :live THEN NULL ELSE now() END FROM customers c WHERE c.key = :customer"
)


async def run(app: Any, sql: str, **params: Any) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(sql), params)


async def counts(app: Any) -> dict[str, tuple[int, int]]:
    async with session_scope(app.state.sessionmaker) as session:
        rows = await session.execute(
            text(
                "SELECT c.key, n.members, n.guests FROM seat_counts n "
                "JOIN customers c ON c.id = n.customer_id"
            )
        )
        return {
            row.key: (row.members, row.guests)
            for row in rows
            if (row.members, row.guests) != (0, 0)
        }


async def seat(
    app: Any, id: str, type: str = "member", customer: str = "acme", live: bool = True
) -> None:
    await run(app, INSERT, id=id, type=type, customer=customer, live=live)


async def test_every_write_to_seats_moves_the_counts(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    await create_customer(client, admin, key="other")
    await seat(app, "m1")
    await seat(app, "m2")
    await seat(app, "g1", type="guest")
    await seat(app, "old", live=False)  # released already: never counted
    assert await counts(app) == {"acme": (2, 1)}
    await run(app, "UPDATE seats SET released_at = now() WHERE id = 'm1'")
    assert await counts(app) == {"acme": (1, 1)}
    await run(app, "UPDATE seats SET released_at = now() WHERE id = 'm1'")  # already released
    await run(app, "UPDATE seats SET over_limit = true WHERE id = 'm2'")  # not a counted field
    assert await counts(app) == {"acme": (1, 1)}
    await run(app, "UPDATE seats SET type = 'member' WHERE id = 'g1'")
    assert await counts(app) == {"acme": (2, 0)}
    other = "(SELECT id FROM customers WHERE key = 'other')"
    await run(app, f"UPDATE seats SET customer_id = {other} WHERE id = 'g1'")
    assert await counts(app) == {"acme": (1, 0), "other": (1, 0)}
    await run(app, "DELETE FROM seats WHERE id = 'm2'")
    await run(app, "DELETE FROM seats WHERE id = 'old'")
    assert await counts(app) == {"other": (1, 0)}
    await run(app, "TRUNCATE seats")
    assert await counts(app) == {}
    await seat(app, "again", type="guest", customer="other")
    assert await counts(app) == {"other": (0, 1)}


async def test_a_count_can_never_go_negative(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    await seat(app, "m1")
    with pytest.raises(IntegrityError, match="seat_counts_members_check"):
        await run(app, "UPDATE seat_counts SET members = members - 2")  # whoever writes
    assert await counts(app) == {"acme": (1, 0)}
