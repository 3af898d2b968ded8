"""Faults, with `allotment worker` as real processes and a real receiver: errors, outages,
a killed worker (and its attempt in the log), two workers sharing the queue, a 410, a
rolled-back change, a message no NOTIFY announced. Every delivery is verified with the
`standardwebhooks` package."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from allotment.db import session_scope
from allotment.kit import clock
from allotment.kit.ids import new_id
from allotment.webhooks import catalog, outbox
from allotment.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookMessage
from tests.webhooks.conftest import Workers, until
from tests.webhooks.receiver import Receiver

BASE = "/v1/webhook-endpoints"


async def _endpoint(api: httpx.AsyncClient, receiver: Receiver) -> str:
    created = (await api.post(BASE, json={"url": receiver.url})).json()
    receiver.secrets = [created["secret"]]
    return str(created["id"])


async def _emit(app: Any, count: int = 1, **data: Any) -> list[str]:
    async with session_scope(app.state.sessionmaker) as session:
        return [
            await outbox.emit(session, catalog.USAGE_THRESHOLD_REACHED, {"n": i, **data})
            for i in range(count)
        ]


async def _emit_silently(app: Any, endpoint_id: str) -> str:
    """A message and its delivery written as `emit` writes them, but with no NOTIFY: what a
    worker sees when the notification was lost (its connection dropped at the commit)."""
    now = clock.utcnow()
    message_id = new_id("msg")
    async with session_scope(app.state.sessionmaker) as session:
        session.add(
            WebhookMessage(
                id=message_id,
                event_type=catalog.USAGE_THRESHOLD_REACHED,
                body=outbox.body(catalog.USAGE_THRESHOLD_REACHED, {"silent": True}, at=now),
                created_at=now,
            )
        )
        await session.flush()
        session.add(
            WebhookDelivery(
                id=f"whd_{message_id[4:]}_{endpoint_id[3:]}",
                message_id=message_id,
                endpoint_id=endpoint_id,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return message_id


async def _attempts(app: Any) -> int:
    """Attempts that got their answer (or none): not those still in flight."""
    async with session_scope(app.state.sessionmaker) as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(WebhookAttempt)
                .where(WebhookAttempt.outcome != "in_flight")
            )
            or 0
        )


async def _states(app: Any) -> dict[str, int]:
    async with session_scope(app.state.sessionmaker) as session:
        rows = await session.execute(
            select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)
        )
        return {state: int(n) for state, n in rows}


def _all_verified(receiver: Receiver) -> bool:
    return all(r.verified_with == receiver.secrets for r in receiver.received)


async def test_one_worker_through_errors_outages_and_a_gone_endpoint(
    api, hooks_app, receiver, workers: Workers
) -> None:
    endpoint = await _endpoint(api, receiver)
    workers.start()

    # A change that rolls back after emitting sends nothing; the next one is delivered.
    with pytest.raises(RuntimeError):
        async with session_scope(hooks_app.state.sessionmaker) as session:
            await outbox.emit(session, catalog.CONTRACT_EXPIRED, {"contract": "rolled back"})
            raise RuntimeError("the change fails")
    (first,) = await _emit(hooks_app)
    await until(lambda: first in receiver.ids(), what="the committed message")
    assert set(receiver.ids()) == {first}  # and not the rolled-back one

    # 500, then 200: tried again with the same webhook-id.
    receiver.script.extend([500, 200])
    (flaky,) = await _emit(hooks_app)
    await until(lambda: receiver.ids().count(flaky) >= 2, what="500 then 200")
    await until(lambda: _delivered(hooks_app, 2), what="recorded as delivered")

    # The receiver is down for a while: every message is delivered once it is back, each
    # under the id it was written with.
    receiver.stop()
    backlog = await _emit(hooks_app, 5)
    before = await _attempts(hooks_app)
    await until(
        lambda: _more_attempts(hooks_app, before + 5), what="attempts while the receiver is down"
    )
    receiver.start()
    await until(lambda: set(receiver.ids()) >= set(backlog), within=30, what="the backlog")
    assert set(receiver.ids()) == {first, flaky, *backlog}
    await until(lambda: _delivered(hooks_app, 7), what="all recorded as delivered")

    # 429 with Retry-After holds the endpoint back at least that long.
    receiver.script.append((429, {"Retry-After": "1"}))
    (slowed,) = await _emit(hooks_app)
    await until(lambda: receiver.ids().count(slowed) >= 2, what="the 429 retried")
    first_at, second_at = [r.at for r in receiver.received if r.id == slowed][:2]
    assert second_at - first_at >= 0.9

    # 410 disables the endpoint: what follows is not sent to it.
    receiver.script.append(410)
    (gone,) = await _emit(hooks_app)
    await until(lambda: receiver.ids().count(gone) == 1, what="the 410")

    async def disabled() -> bool:
        return (await api.get(f"{BASE}/{endpoint}")).json()["enabled"] is False

    await until(disabled, what="the endpoint disabled")
    assert "410" in (await api.get(f"{BASE}/{endpoint}")).json()["disabled_reason"]
    (after,) = await _emit(hooks_app)  # no delivery: the endpoint is disabled
    assert await _states(hooks_app) == {"delivered": 8, "pending": 1}  # the 410'd one waits
    assert _all_verified(receiver)
    assert after not in receiver.ids()

    # Enabled again, it gets what waited (the 410'd message, same id); a message written
    # while it was disabled was never queued for it.
    assert (await api.patch(f"{BASE}/{endpoint}", json={"enabled": True})).status_code == 200
    await until(lambda: receiver.ids().count(gone) >= 2, what="the waiting delivery")
    await until(lambda: _delivered(hooks_app, 9), what="recorded as delivered")
    assert after not in receiver.ids()
    assert _all_verified(receiver)


async def _more_attempts(app: Any, at_least: int) -> bool:
    return await _attempts(app) >= at_least


async def _delivered(app: Any, count: int) -> bool:
    return (await _states(app)).get("delivered", 0) == count


async def test_a_worker_killed_mid_delivery_is_followed_by_a_delivery_after_restart(
    api, hooks_app, receiver, workers: Workers
) -> None:
    endpoint = await _endpoint(api, receiver)
    receiver.hold_s = 1.5  # below the 3 s timeout: the worker is still waiting when killed
    doomed = workers.start()
    (message,) = await _emit(hooks_app)
    await until(lambda: receiver.ids() == [message], what="the first attempt in flight")
    (delivery,) = (await api.get(f"{BASE}/{endpoint}/deliveries")).json()["items"]
    assert [a["outcome"] for a in delivery["attempt_log"]] == ["in_flight"]
    workers.kill(doomed)
    receiver.hold_s = 0.0
    workers.start()  # its claim waits for the killed worker's lease to lapse
    await until(lambda: receiver.ids() == [message, message], what="sent again after restart")
    await until(lambda: _delivered(hooks_app, 1), what="recorded as delivered")
    assert _all_verified(receiver)

    # The log holds both attempts: the cut one, closed as interrupted by the claim that took
    # the delivery over, then the one that was answered; one message, one webhook-id.
    (delivery,) = (await api.get(f"{BASE}/{endpoint}/deliveries")).json()["items"]
    assert delivery["message_id"] == message and delivery["attempts"] == 2
    cut, answered = delivery["attempt_log"]
    assert cut["outcome"] == "interrupted" and cut["status"] is None
    assert cut["duration_ms"] is None and cut["error"].startswith("interrupted")
    assert answered["outcome"] == "delivered" and answered["status"] == 200
    assert answered["duration_ms"] >= 0 and answered["error"] is None
    assert datetime.fromisoformat(cut["attempted_at"]) < datetime.fromisoformat(
        answered["attempted_at"]
    )


async def test_a_message_no_notify_announced_is_swept_up(
    api, hooks_app, receiver, workers: Workers
) -> None:
    """Delivery is woken by NOTIFY at commit; a message whose notification was lost still
    goes out, found by the loop's poll (ALLOTMENT_WEBHOOKS_POLL_S)."""
    endpoint = await _endpoint(api, receiver)
    # A worker that polls once a minute: the notified message at once, the silent one not.
    slow = workers.start(webhooks_poll_s=60.0)
    (heard,) = await _emit(hooks_app)
    await until(lambda: heard in receiver.ids(), what="the notified message")
    await until(lambda: _delivered(hooks_app, 1), what="recorded as delivered")
    await asyncio.sleep(0.5)  # a finished delivery wakes the loop once more: let it sleep
    unheard = await _emit_silently(hooks_app, endpoint)
    await asyncio.sleep(2.0)
    assert unheard not in receiver.ids()  # nothing but the poll would send it
    workers.kill(slow)

    # Written while no worker runs: sent once one starts.
    workers.start(webhooks_poll_s=0.5)
    await until(lambda: unheard in receiver.ids(), what="the message written while down")
    # With the worker up and listening, a message no NOTIFY announces goes out at the poll.
    silent = await _emit_silently(hooks_app, endpoint)
    await until(lambda: silent in receiver.ids(), within=5, what="the silent message, swept")
    await until(lambda: _delivered(hooks_app, 3), what="all recorded as delivered")
    assert sorted(receiver.ids()) == sorted([heard, unheard, silent])
    assert _all_verified(receiver)


async def test_two_workers_never_send_one_message_at_once(
    api, hooks_app, receiver, workers: Workers
) -> None:
    await _endpoint(api, receiver)
    receiver.hold_s = 0.1
    # A generous timeout: an attempt that timed out on a loaded machine would be sent again
    # (at least once), which is not what this test is about.
    workers.start(webhooks_timeout_s=5.0, webhooks_lease_s=8.0)
    workers.start(webhooks_timeout_s=5.0, webhooks_lease_s=8.0)
    emitted = []
    for _ in range(4):
        emitted += await _emit(hooks_app, 10)
    await until(lambda: len(receiver.ids()) >= len(emitted), within=30, what="every message")
    await until(lambda: _delivered(hooks_app, len(emitted)), what="all recorded")
    assert receiver.overlaps == []
    assert sorted(receiver.ids()) == sorted(emitted)  # each exactly once
    assert _all_verified(receiver)
