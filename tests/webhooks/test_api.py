"""The webhook endpoints API, with deliveries to a real receiver verified by the
`standardwebhooks` package (the delivery loop runs in this process here; tests/webhooks/
test_worker_faults.py runs it as `allotment worker` processes)."""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx

from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.webhooks import catalog, outbox, targets
from allotment.webhooks.delivery import Answer, DeliveryLoop
from tests.webhooks.conftest import until
from tests.webhooks.receiver import Receiver

BASE = "/v1/webhook-endpoints"


async def _create(api: httpx.AsyncClient, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    response = await api.post(BASE, json={"url": receiver.url, **fields})
    assert response.status_code == 201, response.text
    created = response.json()
    receiver.secrets = [created["secret"]]
    return created


async def test_endpoint_lifecycle_shows_the_secret_once(api, receiver) -> None:
    created = await _create(
        api, receiver, description="finance", event_types=[catalog.CONTRACT_EXPIRED]
    )
    assert created["secret"].startswith("whsec_") and created["id"].startswith("we_")
    read = (await api.get(f"{BASE}/{created['id']}")).json()
    assert "secret" not in read and read["event_types"] == [catalog.CONTRACT_EXPIRED]
    listed = (await api.get(BASE)).json()
    assert [e["id"] for e in listed["items"]] == [created["id"]] and "secret" not in listed[
        "items"
    ][0]
    patched = await api.patch(
        f"{BASE}/{created['id']}", json={"event_types": None, "enabled": False}
    )
    assert patched.status_code == 200 and patched.json()["event_types"] is None
    assert patched.json()["enabled"] is False
    assert (await api.delete(f"{BASE}/{created['id']}")).status_code == 204
    gone = await api.get(f"{BASE}/{created['id']}")
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"


async def test_bad_endpoints_are_refused_with_the_path(api) -> None:
    cases = [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        (
            {"url": "http://127.0.0.1:1/x", "event_types": ["contract.expired", "nope"]},
            "event_types[1]",
        ),
        ({"url": "http://127.0.0.1:1/x", "event_types": []}, "event_types"),
        (
            {
                "url": "http://127.0.0.1:1/x",
                "event_types": ["policy.published", "policy.published"],
            },
            "event_types[1]",
        ),
    ]
    for body, path in cases:
        response = await api.post(BASE, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert path in [e["path"] for e in response.json()["errors"]], (body, response.json())
    unknown = await api.post(BASE, json={"url": "http://127.0.0.1:1/x", "secret": "mine"})
    assert unknown.status_code == 422
    assert (await api.patch(f"{BASE}/we_missing", json={"enabled": True})).status_code == 404
    assert (await api.post("/v1/webhook-deliveries/whd_missing/retry")).status_code == 404


async def test_private_targets_are_refused_by_default(client, admin) -> None:
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:192.168.0.1]/hook",
        "http://[64:ff9b::7f00:1]/hook",  # NAT64 of 127.0.0.1
        "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
        "http://[2002:a9fe:a9fe::1]/hook",  # 6to4 of 169.254.169.254
        "http://[::7f00:1]/hook",  # IPv4-compatible 127.0.0.1
    ):
        response = await client.post(BASE, json={"url": url}, headers=admin)
        assert response.status_code == 422, url
        assert response.json()["errors"][0]["path"] == "url"
        assert "ALLOTMENT_WEBHOOKS_ALLOW_PRIVATE" in response.json()["errors"][0]["message"]


def test_embedded_ipv4_addresses_are_judged_by_it() -> None:
    public = {"64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "2606:4700::1111"}
    for text in public | {"64:ff9b::7f00:1", "64:ff9b::a00:1", "2002:c0a8:1::", "::ffff:10.0.0.1"}:
        assert targets.is_public(ipaddress.ip_address(text)) is (text in public), text
    teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:80ff:fffe")  # client 127.0.0.1
    assert targets.embedded_ipv4(teredo) == ipaddress.IPv4Address("127.0.0.1")
    assert not targets.is_public(teredo)


async def test_urls_the_sender_would_refuse_are_refused_at_url(api) -> None:
    """Whitespace around, line breaks, tabs, other control characters: a 422 at `url`, on
    create and on PATCH, rather than an endpoint whose every delivery fails."""
    good = await api.post(BASE, json={"url": "http://127.0.0.1:1/x"})
    assert good.status_code == 201
    for url in (
        " http://127.0.0.1:1/x",
        "http://127.0.0.1:1/x ",
        "http://127.0.0.1:1/x\n",
        "http://127.0.0.1:1/x\r\nX-Injected: 1",
        "http://127.0.0.1:1/a\tb",
        "http://127.0.0.1:1/a\x7fb",
        "http://exa mple.com/x",
    ):
        for response in (
            await api.post(BASE, json={"url": url}),
            await api.patch(f"{BASE}/{good.json()['id']}", json={"url": url}),
        ):
            assert response.status_code == 422, (url, response.text)
            assert [e["path"] for e in response.json()["errors"]] == ["url"], url
    assert (await api.get(f"{BASE}/{good.json()['id']}")).json()["url"] == "http://127.0.0.1:1/x"


async def test_enabled_takes_json_booleans_only(api) -> None:
    created = await api.post(BASE, json={"url": "http://127.0.0.1:1/x"})
    for value in ("no", "off", "false", 0, 1, "yes"):
        for response in (
            await api.post(BASE, json={"url": "http://127.0.0.1:1/x", "enabled": value}),
            await api.patch(f"{BASE}/{created.json()['id']}", json={"enabled": value}),
        ):
            assert response.status_code == 422, (value, response.text)
            assert response.json()["errors"][0]["path"] == "enabled"
    assert (await api.get(f"{BASE}/{created.json()['id']}")).json()["enabled"] is True


async def test_a_retry_on_a_disabled_endpoint_is_a_conflict(api, receiver) -> None:
    created = await _create(api, receiver)
    sent = (await api.post(f"{BASE}/{created['id']}/test")).json()
    await api.patch(f"{BASE}/{created['id']}", json={"enabled": False})
    refused = await api.post(f"/v1/webhook-deliveries/{sent['delivery_id']}/retry")
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("webhook-endpoint-disabled")
    await api.patch(f"{BASE}/{created['id']}", json={"enabled": True})
    assert (
        await api.post(f"/v1/webhook-deliveries/{sent['delivery_id']}/retry")
    ).status_code == 202


async def test_only_admins_manage_endpoints(api, hooks_app) -> None:
    from tests.factories.auth import create_key

    backend = await create_key(hooks_app, scopes=["check"])
    finance = await create_key(hooks_app, scopes=["finance"])
    for headers in (backend, finance):
        assert (await api.get(BASE, headers=headers)).status_code == 403
        assert (
            await api.post(BASE, json={"url": "http://127.0.0.1:1/"}, headers=headers)
        ).status_code == 403


async def test_test_ping_is_delivered_signed_and_listed_with_its_attempt(
    api, receiver, delivering
) -> None:
    created = await _create(api, receiver, event_types=[catalog.SEATS_LIMIT_REACHED])
    sent = await api.post(f"{BASE}/{created['id']}/test")
    assert sent.status_code == 202
    await until(lambda: len(receiver.received) == 1, what="the test ping")
    ping = receiver.received[0]
    assert ping.id == sent.json()["message_id"]
    assert ping.verified_with == receiver.secrets
    assert ping.payload["type"] == catalog.WEBHOOK_TEST
    assert set(ping.payload) == {"type", "timestamp", "data"}

    async def listed() -> bool:
        items = (await api.get(f"{BASE}/{created['id']}/deliveries")).json()["items"]
        return bool(items) and items[0]["state"] == "delivered"

    await until(listed, what="the delivery recorded")
    (delivery,) = (await api.get(f"{BASE}/{created['id']}/deliveries")).json()["items"]
    assert delivery["message_id"] == ping.id and delivery["event_type"] == catalog.WEBHOOK_TEST
    (attempt,) = delivery["attempt_log"]
    assert attempt["status"] == 200 and attempt["error"] is None and attempt["duration_ms"] >= 0

    # A manual retry sends it again, with the same webhook-id.
    retried = await api.post(f"/v1/webhook-deliveries/{delivery['id']}/retry")
    assert retried.status_code == 202 and retried.json()["state"] == "pending"
    await until(lambda: len(receiver.received) == 2, what="the retried delivery")
    assert receiver.ids() == [ping.id, ping.id]
    assert receiver.received[1].verified_with == receiver.secrets


async def test_rotation_signs_with_both_secrets_during_the_overlap(
    api, receiver, delivering, hooks_app
) -> None:
    created = await _create(api, receiver)
    old = created["secret"]
    rotated = await api.post(f"{BASE}/{created['id']}/rotate-secret")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old
    assert rotated.json()["previous_secret_expires_at"] is not None
    receiver.secrets = [old, new]
    async with session_scope(hooks_app.state.sessionmaker) as session:
        await outbox.emit(session, catalog.POLICY_PUBLISHED, {"version": 3})
    await until(lambda: len(receiver.received) == 1, what="a delivery after rotation")
    (message,) = receiver.received
    assert len(message.signature.split(" ")) == 2
    assert message.verified_with == [old, new]  # each secret alone verifies it
    assert message.payload["data"] == {"version": 3}


async def test_filters_choose_the_endpoints(api, delivering, hooks_app) -> None:
    everything, seats = Receiver().start(), Receiver().start()
    try:
        await _create(api, everything)
        await _create(api, seats, event_types=[catalog.SEATS_LIMIT_REACHED])
        async with session_scope(hooks_app.state.sessionmaker) as session:
            usage = await outbox.emit(
                session, catalog.USAGE_SURGE, {"meter": "m"}, customer_key="acme"
            )
            seat = await outbox.emit(session, catalog.SEATS_LIMIT_REACHED, {"limit": 3})
        await until(lambda: len(everything.received) == 2 and len(seats.received) == 1)
        assert sorted(everything.ids()) == sorted([usage, seat]) and seats.ids() == [seat]
        assert all(r.verified_with for r in everything.received + seats.received)
    finally:
        everything.stop()
        seats.stop()


async def test_metrics_count_deliveries_and_the_queue(api, receiver, hooks_app) -> None:
    created = await _create(api, receiver)
    await api.post(f"{BASE}/{created['id']}/test")
    text = (await api.get("/metrics")).text
    assert "allotment_webhook_queue_depth 1.0" in text
    assert 'allotment_webhook_deliveries{state="pending"} 1.0' in text
    assert "allotment_webhook_oldest_due_seconds" in text


async def test_a_private_target_is_refused_again_at_delivery(
    api, receiver, hooks_app, stores
) -> None:
    """An endpoint accepted while private targets were allowed is not sent to by a worker
    that does not allow them: the attempt says why, and it is retried later."""
    created = await _create(api, receiver)
    await api.post(f"{BASE}/{created['id']}/test")
    strict = DeliveryLoop(
        hooks_app.state.sessionmaker,
        hooks_app.state.settings.model_copy(update={"webhooks_allow_private": False}),
        database_url=stores.database_url,
    )
    try:
        assert await strict.drain() == 1
    finally:
        await strict.aclose()
    (delivery,) = (await api.get(f"{BASE}/{created['id']}/deliveries")).json()["items"]
    assert delivery["state"] == "pending" and delivery["last_status"] is None
    assert delivery["last_error"].startswith("refused: host '127.0.0.1' resolves to 127.0.0.1")
    assert receiver.received == []


async def test_deliveries_page_through_every_one_once(api, receiver, hooks_app) -> None:
    """More deliveries than a page: every page answers, newest first, each id once."""
    created = await _create(api, receiver)
    async with session_scope(hooks_app.state.sessionmaker) as session:
        for n in range(25):
            await outbox.emit(session, catalog.POLICY_PUBLISHED, {"version": n})
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(6):  # five pages of five, then none
        params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = await api.get(f"{BASE}/{created['id']}/deliveries", params=params)
        assert page.status_code == 200, page.text
        seen += [d["id"] for d in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert cursor is None and len(seen) == 25 and len(set(seen)) == 25
    assert seen == sorted(seen, reverse=True)


async def test_an_attempt_settled_after_its_endpoint_was_deleted_is_dropped_quietly(
    api, receiver, hooks_app, stores
) -> None:
    """DELETE while a delivery is being sent: the answer has nothing left to record."""
    created = await _create(api, receiver)
    await api.post(f"{BASE}/{created['id']}/test")
    loop = DeliveryLoop(
        hooks_app.state.sessionmaker, hooks_app.state.settings, database_url=stores.database_url
    )
    try:
        (item,) = await loop.claim(1)
        assert (await api.delete(f"{BASE}/{created['id']}")).status_code == 204
        assert await loop.settle(item, Answer(200, None, None, 5, utcnow())) == "deleted"
    finally:
        await loop.aclose()
