"""One event of every type, each caused by its real action, delivered by the delivery loop to
a real HTTP receiver and verified there with the `standardwebhooks` package
(docs/webhooks.md, "Event types")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from allotment.kit.clock import utcnow
from allotment.webhooks import catalog
from allotment.worker import run_once
from tests.factories.alerts import register_at
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import amend_seats, assign
from tests.factories.usage import event, ingest_at, metered_document, send
from tests.webhooks.conftest import until
from tests.webhooks.receiver import Receiver


async def test_every_event_type_reaches_a_receiver_signed(
    hooks_app: Any, api: httpx.AsyncClient, receiver: Receiver, delivering: Any
) -> None:
    created = await api.post("/v1/webhook-endpoints", json={"url": receiver.url})
    assert created.status_code == 201, created.text
    receiver.secrets = [created.json()["secret"]]
    document = metered_document()
    document["alerts"] = {
        "instance_surge": {"factor": 2, "window": "1m", "min": 5},
        "usage_surge": {"storage": {"factor": 3, "window": "1h", "min": 50}},
    }
    await publish_policy(api, {}, document)  # policy.published
    now = utcnow()
    await create_customer(api, {}, key="acme")
    term_end = now + timedelta(days=100)
    limits = [{"meter": "api_calls", "limit": 100, "reason": "test"}]
    acme = await create_contract(
        api, {}, plan="enterprise", seats={"limit": 2}, overrides=limits, ends_at=iso(term_end)
    )
    await create_customer(api, {}, key="trialco")
    trial_end = now + timedelta(days=20)
    await create_contract(api, {}, customer="trialco", kind="trial", ends_at=iso(trial_end))
    for subject in ("ann", "bob"):  # seats.limit_reached
        assert (await assign(api, {}, subject)).status_code == 201
    for index in range(2):  # instances.surge: 7 against 2 a minute before
        await register_at(hooks_app, f"base-{index}", now - timedelta(seconds=90))
    for index in range(5):
        await register_at(hooks_app, f"new-{index}", now + timedelta(seconds=index))
    assert (await send(api, {}, event("c1", data={"count": 80}))).status_code == 200  # 80 %
    storage = [event(f"s{i}", type="storage.used", data={"gb": 60 + i}) for i in range(2)]
    await ingest_at(hooks_app, storage, received=now)  # usage.surge: 121 against nothing
    await amend_seats(api, {}, limit=1, burst={"extra": 0})  # entitlements.changed
    reconciled = await api.get(
        f"/v1/contracts/{acme['id']}/reconciliation", params={"period": now.strftime("%Y-%m")}
    )
    assert reconciled.status_code == 200  # reconciliation.discrepancy: 2 held over 1
    maker = hooks_app.state.sessionmaker
    await run_once(maker, now=trial_end - timedelta(days=7))  # contract.trial_ending
    await run_once(maker, now=trial_end + timedelta(minutes=1))  # contract.expired
    await run_once(maker, now=term_end - timedelta(days=29))  # contract.renewal_upcoming

    def arrived() -> set[str]:
        return {r.payload["type"] for r in receiver.received if r.payload is not None}

    await until(lambda: set(catalog.SUBSCRIBABLE) <= arrived(), what="every event type")
    assert all(r.verified_with == receiver.secrets for r in receiver.received)
    by_type = {r.payload["type"]: r.payload for r in receiver.received}
    assert by_type["usage.threshold_reached"]["data"]["threshold_percent"] == 80
    assert by_type["seats.limit_reached"]["data"]["pool"] == "members"
    assert by_type["contract.trial_ending"]["data"]["customer"] == "trialco"
    assert by_type["reconciliation.discrepancy"]["data"]["contract"] == acme["id"]
