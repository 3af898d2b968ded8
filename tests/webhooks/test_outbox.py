"""The outbox: a message and its deliveries are written in the caller's transaction, and
the delivery loop is woken only when that transaction commits."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import func, select, update

from allotment.db import libpq_url, session_scope
from allotment.kit import clock
from allotment.kit.ids import new_id
from allotment.webhooks import catalog, outbox
from allotment.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookMessage


async def _endpoint(app: object, *, event_types: list[str] | None, enabled: bool = True) -> str:
    now = clock.utcnow()
    endpoint_id = new_id("we")
    async with session_scope(app.state.sessionmaker) as session:  # type: ignore[attr-defined]
        session.add(
            WebhookEndpoint(
                id=endpoint_id,
                url="http://127.0.0.1:9/hook",
                event_types=event_types,
                enabled=enabled,
                secret_sealed=b"-",
                created_at=now,
                updated_at=now,
            )
        )
    return endpoint_id


async def _count(app: object, model: type) -> int:
    async with session_scope(app.state.sessionmaker) as session:  # type: ignore[attr-defined]
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_emit_writes_one_delivery_per_accepting_enabled_endpoint(app, client) -> None:
    everything = await _endpoint(app, event_types=None)
    seats_only = await _endpoint(app, event_types=[catalog.SEATS_LIMIT_REACHED])
    await _endpoint(app, event_types=None, enabled=False)
    async with session_scope(app.state.sessionmaker) as session:
        message_id = await outbox.emit(
            session, catalog.USAGE_THRESHOLD_REACHED, {"meter": "api_calls"}, customer_key="acme"
        )
    async with session_scope(app.state.sessionmaker) as session:
        message = await session.get(WebhookMessage, message_id)
        endpoints = (
            await session.scalars(
                select(WebhookDelivery.endpoint_id).where(WebhookDelivery.message_id == message_id)
            )
        ).all()
    assert message is not None and message.customer_key == "acme"
    assert message.body.startswith('{"data":{"meter":"api_calls"}')
    assert '"type":"usage.threshold_reached"' in message.body
    assert endpoints == [everything]
    assert seats_only not in endpoints


async def test_a_rolled_back_emit_leaves_nothing_and_notifies_no_one(app, client, stores) -> None:
    await _endpoint(app, event_types=None)
    listener = await psycopg.AsyncConnection.connect(
        libpq_url(stores.database_url), autocommit=True
    )
    try:
        await listener.execute(f"LISTEN {outbox.CHANNEL}")
        with pytest.raises(RuntimeError):
            async with session_scope(app.state.sessionmaker) as session:
                await outbox.emit(session, catalog.CONTRACT_EXPIRED, {"contract": "c_1"})
                raise RuntimeError("the change fails after emitting")
        assert await _count(app, WebhookMessage) == 0
        assert await _count(app, WebhookDelivery) == 0
        async with session_scope(app.state.sessionmaker) as session:
            await outbox.emit(session, catalog.CONTRACT_EXPIRED, {"contract": "c_2"})
        heard = [n.channel async for n in listener.notifies(timeout=5, stop_after=1)]
        assert heard == [outbox.CHANNEL]
        # Only the committed one was announced: nothing else is waiting.
        extra = [n async for n in listener.notifies(timeout=0.2)]
        assert extra == []
    finally:
        await listener.close()


async def test_emit_refuses_a_type_outside_the_catalog(app, client) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        with pytest.raises(ValueError):
            await outbox.emit(session, "usage.made_up", {})


async def test_purge_drops_settled_messages_and_keeps_what_waits(app, client) -> None:
    await _endpoint(app, event_types=None)
    async with session_scope(app.state.sessionmaker) as session:
        settled = await outbox.emit(session, catalog.POLICY_PUBLISHED, {"version": 2})
        waiting = await outbox.emit(session, catalog.POLICY_PUBLISHED, {"version": 3})
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.message_id == settled)
            .values(state="delivered")
        )
    later = clock.utcnow() + timedelta(days=31)
    async with session_scope(app.state.sessionmaker) as session:
        assert await outbox.purge(session, before=clock.utcnow() - timedelta(days=1), batch=10) == 0
        assert await outbox.purge(session, before=later, batch=10) == 1
    async with session_scope(app.state.sessionmaker) as session:
        left = (await session.scalars(select(WebhookMessage.id))).all()
    assert left == [waiting]
    assert await _count(app, WebhookDelivery) == 1
