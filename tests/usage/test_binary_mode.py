"""CloudEvents over HTTP as the official SDK sends them (the `cloudevents` package): binary
content mode (attributes in `ce-*` headers, `data` the body) and structured mode, with the
same exactly-once guarantee in both — a replay in either mode is a duplicate — and errors in
binary mode naming the header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from cloudevents.core.bindings.http import HTTPMessage, to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import metered_document


def sdk_event(event_id: str, count: int, **attributes: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": event_id,
            "source": "gateway",
            "type": "api.call",
            "subject": "acme",
            "time": datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1),
            **attributes,
        },
        data={"count": count},
    )


async def _post(
    client: httpx.AsyncClient, headers: dict[str, str], message: HTTPMessage
) -> httpx.Response:
    return await client.post(
        "/v1/events", content=message.body, headers={**headers, **message.headers}
    )


async def _total(client: httpx.AsyncClient, finance: dict[str, str]) -> Decimal:
    now = datetime.now(UTC)
    response = await client.get(
        "/v1/customers/acme/usage",
        params={
            "meter": "api_calls",
            "from": (now - timedelta(hours=2)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
        },
        headers=finance,
    )
    assert response.status_code == 200, response.text
    return Decimal(response.json()["total"])


async def _setup(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin)


async def test_binary_and_structured_modes_count_once_whatever_the_mode_of_the_replay(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    finance: dict[str, str],
) -> None:
    await _setup(client, admin)
    first = sdk_event("b-1", 25)
    binary = to_binary_event(first)
    assert "ce-id" in binary.headers and b"count" in binary.body  # what the SDK really sends
    sent = await _post(client, backend, binary)
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] == 1
    assert (await _post(client, backend, to_binary_event(first))).json()["duplicates"] == 1
    assert (await _post(client, backend, to_structured_event(first))).json()["duplicates"] == 1

    second = sdk_event("s-1", 10)
    assert (await _post(client, backend, to_structured_event(second))).json()["accepted"] == 1
    assert (await _post(client, backend, to_binary_event(second))).json()["duplicates"] == 1
    assert await _total(client, finance) == 35


async def test_binary_mode_errors_name_the_header(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    await _setup(client, admin)
    message = to_binary_event(sdk_event("b-2", 5))
    for header in ("ce-id", "ce-source", "ce-type", "ce-subject"):
        headers = {k: v for k, v in message.headers.items() if k != header}
        refused = await client.post(
            "/v1/events", content=message.body, headers={**backend, **headers}
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert [e["path"] for e in refused.json()["errors"]] == [header]
        assert f"{header}: required" in refused.json()["detail"]
    no_offset = {**message.headers, "ce-time": "2026-12-01T10:00:00"}
    refused = await client.post(
        "/v1/events", content=message.body, headers={**backend, **no_offset}
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["path"] == "ce-time"
    bad_data = await client.post(
        "/v1/events",
        content=b'{"count": "many"}',
        headers={**backend, **message.headers, "Content-Type": "application/json"},
    )
    assert bad_data.status_code == 422
    assert bad_data.json()["errors"][0]["path"] == "data.count"
    not_json = await client.post(
        "/v1/events", content=b"{oops", headers={**backend, **message.headers}
    )
    assert not_json.status_code == 400 and not_json.json()["type"].endswith("malformed-json")
    opaque = await client.post(
        "/v1/events",
        content=b"\x00\x01",
        headers={**backend, **message.headers, "Content-Type": "application/octet-stream"},
    )
    assert opaque.status_code == 415


async def test_a_binary_mode_retry_with_an_idempotency_key_is_replayed(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    finance: dict[str, str],
) -> None:
    await _setup(client, admin)
    message = to_binary_event(sdk_event("b-3", 7))
    keyed = {**backend, "Idempotency-Key": "retry-1"}
    first = await _post(client, keyed, message)
    again = await _post(client, keyed, message)
    assert again.headers.get("idempotent-replayed") == "true" and again.content == first.content
    # The same key and body with other attributes is another request: refused.
    other = to_binary_event(sdk_event("b-4", 7))
    assert other.body == message.body
    assert (await _post(client, keyed, other)).status_code == 422
    assert await _total(client, finance) == 7
