"""The service's own lifecycle events land in the usage stream, and partitions are made ahead."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.usage import partitions
from allotment.worker import run_once
from tests.factories.auth import create_key
from tests.factories.seats import assign, register


async def _events(app: Any) -> list[Any]:
    async with session_scope(app.state.sessionmaker) as session:
        found = await session.execute(
            text(
                "SELECT e.type, e.data, c.key AS customer FROM usage_events e "
                "LEFT JOIN customers c ON c.id = e.customer_id "
                "WHERE e.source = 'allotment' ORDER BY e.received_at, e.id"
            )
        )
        return list(found.all())


async def test_changes_emit_lifecycle_events(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], metered: str
) -> None:
    backend = await create_key(app, scopes=["check"])
    assert (await assign(client, backend, "ann")).status_code == 201
    assert (await client.delete("/v1/customers/acme/seats/ann", headers=backend)).status_code == 204
    instance = (await register(client, backend, "host-1")).json()
    assert (
        await client.delete(f"/v1/instances/{instance['id']}", headers=backend)
    ).status_code == 204
    contract = (await client.get("/v1/customers/acme/contracts", headers=admin)).json()["items"][0]
    amended = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"seats": {"limit": 12}},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert amended.status_code == 200, amended.text
    events = await _events(app)
    types = [e.type for e in events]
    assert types[0] == "allotment.policy.published"  # the fixture published, then contracted
    assert types[1:] == [
        "allotment.contract.created",
        "allotment.seat.assigned",
        "allotment.seat.released",
        "allotment.instance.registered",
        "allotment.instance.deregistered",
        "allotment.contract.amended",
    ]
    assert events[0].customer is None and events[0].data["version"] == 1
    assert all(e.customer == "acme" for e in events[1:])
    ann = app.state.pseudonyms.of("acme", "ann")  # events name subjects by pseudonym
    assert events[2].data["subject"] == ann and events[3].data["subject"] == ann
    assert events[4].data["fingerprint"] == "host-1"
    assert events[6].data["revision"] == 2


async def test_the_worker_creates_partitions_ahead(app: Any, client: httpx.AsyncClient) -> None:
    later = utcnow() + timedelta(days=400)  # months no request has written to yet
    partitions.forget()
    done = await run_once(app.state.sessionmaker, now=later)
    assert done["partitions_created"] == 3
    assert (await run_once(app.state.sessionmaker, now=later))["partitions_created"] == 0
    async with session_scope(app.state.sessionmaker) as session:
        names = (
            (
                await session.execute(
                    text(
                        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'usage_events'"
                    )
                )
            )
            .scalars()
            .all()
        )
    expected = {partitions.name(y, m) for y, m in partitions.months_ahead(later, 2)}
    assert expected <= set(names)


async def test_a_partition_made_inside_a_transaction_needs_no_second_pooled_connection(
    stores: Any, client: httpx.AsyncClient
) -> None:
    """Lifecycle events are written from a before-commit hook, which may have to create a
    month's partition while the transaction holds its pooled connection. With every
    connection of the pool held so (here: a pool of one, no overflow), the DDL must still
    get a connection: its own, outside the pool."""
    from datetime import datetime  # noqa: PLC0415

    from allotment.db import create_engine, create_sessionmaker, driver

    settings = stores.settings(db_pool_size=1, db_max_overflow=0)
    engine = create_engine(settings.database_url, settings)
    month = datetime(2091, 7, 15, tzinfo=UTC)
    try:
        partitions.forget()
        async with session_scope(create_sessionmaker(engine)) as session:
            await driver(session)  # the pool's only connection, held by this transaction
            assert await partitions.ensure(engine, [month]) == 1
        async with session_scope(create_sessionmaker(engine)) as session:
            found = await session.execute(
                text("SELECT 1 FROM pg_class WHERE relname = :n"), {"n": partitions.name(2091, 7)}
            )
            assert found.scalar_one() == 1
            await session.execute(text(f"DROP TABLE {partitions.name(2091, 7)}"))
    finally:
        partitions.forget()
        await engine.dispose()
