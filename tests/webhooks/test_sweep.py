"""What the worker's pass tidies (webhooks/sweep.py): an attempt a dead worker left open
when no claim comes to close it, and a rotated endpoint's previous secret once its overlap
has passed (shown as null by the API at once, no longer signing, then dropped)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.webhooks import catalog, outbox
from allotment.webhooks.delivery import Answer, DeliveryLoop
from allotment.webhooks.models import WebhookEndpoint
from allotment.worker import run_once
from tests.webhooks.conftest import until
from tests.webhooks.receiver import Receiver

BASE = "/v1/webhook-endpoints"


async def _create(api: Any, receiver: Receiver) -> dict[str, Any]:
    response = await api.post(BASE, json={"url": receiver.url})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    receiver.secrets = [created["secret"]]
    return created


async def _log(api: Any, endpoint_id: str) -> list[dict[str, Any]]:
    (delivery,) = (await api.get(f"{BASE}/{endpoint_id}/deliveries")).json()["items"]
    return list(delivery["attempt_log"])


async def test_an_open_attempt_no_claim_comes_for_is_closed_once_its_lease_lapsed(
    api, hooks_app, receiver, stores
) -> None:
    """The worker that claimed the delivery dies, and the endpoint is disabled before any
    other claims it: the pass closes the attempt as interrupted once the lease lapsed, not
    before. An answer that does come after all is recorded over it."""
    created = await _create(api, receiver)
    await api.post(f"{BASE}/{created['id']}/test")
    loop = DeliveryLoop(
        hooks_app.state.sessionmaker, hooks_app.state.settings, database_url=stores.database_url
    )
    try:
        (item,) = await loop.claim(1)  # and then, as far as the log knows, nothing
        opened = await _log(api, created["id"])
        assert [(a["outcome"], a["duration_ms"], a["status"]) for a in opened] == [
            ("in_flight", None, None)
        ]
        await api.patch(f"{BASE}/{created['id']}", json={"enabled": False})
        maker = hooks_app.state.sessionmaker
        assert (await run_once(maker, now=utcnow()))["webhook_attempts_interrupted"] == 0
        assert [a["outcome"] for a in await _log(api, created["id"])] == ["in_flight"]

        lapsed = utcnow() + timedelta(seconds=loop.lease_s + 1)
        assert (await run_once(maker, now=lapsed))["webhook_attempts_interrupted"] == 1
        (closed,) = await _log(api, created["id"])
        assert closed["outcome"] == "interrupted" and closed["duration_ms"] is None
        assert closed["error"].startswith("interrupted") and closed["status"] is None
        assert closed["attempted_at"] == opened[0]["attempted_at"]
        assert (await run_once(maker, now=lapsed))["webhook_attempts_interrupted"] == 0

        await loop.settle(item, Answer(204, None, None, 7, utcnow()))
        (answered,) = await _log(api, created["id"])
        assert (answered["outcome"], answered["status"], answered["duration_ms"]) == (
            "delivered",
            204,
            7,
        )
    finally:
        await loop.aclose()


async def test_a_failed_attempt_is_closed_as_failed(api, hooks_app, receiver, delivering) -> None:
    created = await _create(api, receiver)
    receiver.script.extend([503, 200])
    await api.post(f"{BASE}/{created['id']}/test")

    async def both_closed() -> bool:
        log = await _log(api, created["id"])
        return [a["outcome"] for a in log] == ["failed", "delivered"]

    await until(both_closed, what="a failed attempt, then a delivered one")
    failed, delivered = await _log(api, created["id"])
    assert failed["status"] == 503 and failed["error"] == "HTTP 503"
    assert delivered["status"] == 200 and delivered["error"] is None


async def test_the_previous_secret_is_gone_once_the_overlap_has_passed(
    api, hooks_app, receiver, delivering
) -> None:
    created = await _create(api, receiver)
    old = created["secret"]
    settings = hooks_app.state.settings
    hooks_app.state.settings = settings.model_copy(update={"webhooks_rotation_overlap_s": 1})
    try:
        rotated = (await api.post(f"{BASE}/{created['id']}/rotate-secret")).json()
    finally:
        hooks_app.state.settings = settings
    new = rotated["secret"]
    expires_at = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    receiver.secrets = [old, new]
    shown = (await api.get(f"{BASE}/{created['id']}")).json()
    assert datetime.fromisoformat(shown["previous_secret_expires_at"]) == expires_at

    # During the overlap, both secrets sign.
    async with session_scope(hooks_app.state.sessionmaker) as session:
        await outbox.emit(session, catalog.POLICY_PUBLISHED, {"version": 1})
    await until(lambda: len(receiver.received) == 1, what="a delivery during the overlap")
    assert receiver.received[0].verified_with == [old, new]

    # Past it: no expiry shown, and only the new secret signs, before any sweep ran.
    await asyncio.sleep(max((expires_at - utcnow()).total_seconds(), 0) + 0.1)
    shown = (await api.get(f"{BASE}/{created['id']}")).json()
    assert shown["previous_secret_expires_at"] is None
    listed = (await api.get(BASE)).json()["items"]
    assert [e["previous_secret_expires_at"] for e in listed] == [None]
    async with session_scope(hooks_app.state.sessionmaker) as session:
        await outbox.emit(session, catalog.POLICY_PUBLISHED, {"version": 2})
    await until(lambda: len(receiver.received) == 2, what="a delivery after the overlap")
    after = receiver.received[1]
    assert after.verified_with == [new] and len(after.signature.split(" ")) == 1

    # The worker's pass then drops the expired secret itself.
    async with session_scope(hooks_app.state.sessionmaker) as session:
        row = await session.scalar(
            select(WebhookEndpoint).where(WebhookEndpoint.id == rotated["id"])
        )
        assert row is not None and row.previous_secret_sealed is not None
    assert (await run_once(hooks_app.state.sessionmaker))["webhook_secrets_expired"] == 1
    async with session_scope(hooks_app.state.sessionmaker) as session:
        row = await session.scalar(
            select(WebhookEndpoint).where(WebhookEndpoint.id == rotated["id"])
        )
        assert row is not None
        assert row.previous_secret_sealed is None and row.previous_secret_until is None
    assert (await run_once(hooks_app.state.sessionmaker))["webhook_secrets_expired"] == 0
