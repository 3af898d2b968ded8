"""CloudEvents over HTTP as the official SDK sends them (the `cloudevents` package): binary
content mode (attributes in `ce-*` headers, `data` the body) and structured mode, with the
same exactly-once guarantee in both — a replay in either mode is a duplicate — and errors in
binary mode naming the header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
from cloudevents.core.bindings.http import HTTPMessage, to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import metered_document


def sdk_event(event_id: str, count: int, **attributes: Any) -> CloudEvent:
    return _event(event_id, {"count": count}, **attributes)


def _event(event_id: str, data: Any, **attributes: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": event_id,
            "source": "gateway",
            "type": "api.call",
            "subject": "acme",
            "time": datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1),
            **attributes,
        },
        data=data,
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


def _refused(response: httpx.Response, path: str, words: str) -> None:
    """A 422 problem document with exactly one error, on `path`, saying `words`."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert [e["path"] for e in errors] == [path], errors
    assert words in errors[0]["message"], errors
    assert path in response.json()["detail"]


def _binary_headers(event_id: str) -> dict[str, str]:
    return {
        k: v for k, v in to_binary_event(sdk_event(event_id, 50)).headers.items() if k != "ce-id"
    }


async def test_invalid_percent_encoding_in_a_header_is_refused_not_replaced(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    finance: dict[str, str],
) -> None:
    await _setup(client, admin)
    headers = {**backend, **_binary_headers("unused"), "Content-Type": "application/json"}
    for event_id in ("ord-%F0", "ord-%F1", "ord-%C3%28"):
        refused = await client.post(
            "/v1/events", content=b'{"count": 50}', headers={**headers, "ce-id": event_id}
        )
        _refused(refused, "ce-id", "not valid percent-encoded UTF-8")
    bad_subject = await client.post(
        "/v1/events",
        content=b'{"count": 50}',
        headers={**headers, "ce-id": "ord-1", "ce-subject": "acme%FF"},
    )
    _refused(bad_subject, "ce-subject", "not valid percent-encoded UTF-8")
    # Valid percent-encoding (what the SDK sends for a space, é or %) is decoded: the
    # structured replay of the same event is a duplicate.
    odd = sdk_event("ord 2 é%", 5)
    binary = to_binary_event(odd)
    assert binary.headers["ce-id"] == "ord%202%20%C3%A9%25"
    assert (await _post(client, backend, binary)).json()["accepted"] == 1
    assert (await _post(client, backend, to_structured_event(odd))).json()["duplicates"] == 1
    assert await _total(client, finance) == 5


async def test_raw_non_ascii_bytes_in_a_header_are_refused(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    finance: dict[str, str],
) -> None:
    await _setup(client, admin)
    headers: dict[str, Any] = {**backend, **_binary_headers("unused")}
    for raw in (b"raw-r\xc3\xa9", b"raw-r\xe9", b"raw\x01"):
        refused = await client.post(
            "/v1/events", content=b'{"count": 50}', headers={**headers, "ce-id": raw}
        )
        _refused(refused, "ce-id", "percent-encode")
    structured = to_structured_event(sdk_event("raw-ré", 50))
    assert (await _post(client, backend, structured)).json()["accepted"] == 1
    assert await _total(client, finance) == 50


def _bytes_event(event_id: str, data: bytes, **attributes: Any) -> CloudEvent:
    return _event(event_id, data, **{"datacontenttype": "application/json", **attributes})


async def test_structured_data_base64_is_data_and_a_binary_replay_is_a_duplicate(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    finance: dict[str, str],
) -> None:
    await _setup(client, admin)
    sent = _bytes_event("b64-1", b'{"count": 6}')
    structured = to_structured_event(sent)
    assert b'"data_base64"' in structured.body  # what the SDK sends for bytes
    first = await _post(client, backend, structured)
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 1
    assert (await _post(client, backend, structured)).json()["duplicates"] == 1
    assert (await _post(client, backend, to_binary_event(sent))).json()["duplicates"] == 1
    as_data = orjson.loads(structured.body)
    del as_data["data_base64"]
    as_data["data"] = {"count": 6}
    replay = await client.post(
        "/v1/events",
        content=orjson.dumps(as_data),
        headers={**backend, "Content-Type": "application/cloudevents+json"},
    )
    assert replay.json()["duplicates"] == 1, replay.text
    # Sent in binary mode first, replayed with data_base64: a duplicate too; `+json` is JSON.
    second = _bytes_event("b64-2", b'{"count": 4}', datacontenttype="application/vnd.x+json")
    assert (await _post(client, backend, to_binary_event(second))).json()["accepted"] == 1
    assert (await _post(client, backend, to_structured_event(second))).json()["duplicates"] == 1
    # In a batch as well.
    batch = await client.post(
        "/v1/events",
        content=b"[" + to_structured_event(_bytes_event("b64-3", b'{"count": 1}')).body + b"]",
        headers={**backend, "Content-Type": "application/cloudevents-batch+json"},
    )
    assert batch.json()["accepted"] == 1, batch.text
    # Text is a string, as in binary mode: an unmetered type, stored and listed as such.
    text = _bytes_event("b64-4", b"hello", datacontenttype="text/plain", type="log.line")
    answer = await _post(client, backend, to_structured_event(text))
    assert answer.json()["unmetered"] == [{"index": 0, "type": "log.line"}], answer.text
    assert (await _post(client, backend, to_binary_event(text))).json()["duplicates"] == 1
    assert await _total(client, finance) == 11


async def test_bad_data_base64_is_refused_on_its_path(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    await _setup(client, admin)
    base = orjson.loads(to_structured_event(_bytes_event("b64-bad", b'{"count": 6}')).body)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"data": {"count": 6}}, "not both"),
        ({"data_base64": "not base64!"}, "base64"),
        ({"data_base64": 12}, "base64"),
        ({"data_base64": "eyJjb3VudCI6"}, "JSON"),  # '{"count":' — truncated
        ({"datacontenttype": "text/plain", "data_base64": "/w=="}, "UTF-8"),
        ({"datacontenttype": "application/octet-stream"}, "JSON or text"),
    ]
    for change, words in cases:
        refused = await client.post(
            "/v1/events",
            content=orjson.dumps({**base, **change}),
            headers={**backend, "Content-Type": "application/cloudevents+json"},
        )
        _refused(refused, "data_base64", words)


async def test_ce_headers_without_ce_specversion_are_binary_mode_missing_it(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    await _setup(client, admin)
    message = to_binary_event(sdk_event("no-spec", 5))
    headers = {k: v for k, v in message.headers.items() if k != "ce-specversion"}
    for content_type in ("application/json", "text/plain", None):
        sent = {**backend, **headers}
        if content_type is None:
            sent.pop("content-type", None)
        else:
            sent["content-type"] = content_type
        refused = await client.post("/v1/events", content=message.body, headers=sent)
        _refused(refused, "ce-specversion", "required")


async def test_a_repeated_ce_header_is_refused(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],
    finance: dict[str, str],
) -> None:
    await _setup(client, admin)
    message = to_binary_event(sdk_event("d-a", 5))
    for name, values in (("ce-id", ("d-a", "d-b")), ("ce-subject", ("acme", "acme"))):
        headers = [(k, v) for k, v in {**backend, **message.headers}.items() if k != name]
        headers += [(name, value) for value in values]
        refused = await client.post("/v1/events", content=message.body, headers=headers)
        _refused(refused, name, "given more than once")
    assert await _total(client, finance) == 0


async def test_one_error_per_problem_and_reserved_or_misplaced_forms(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    await _setup(client, admin)
    structured = {**backend, "Content-Type": "application/cloudevents+json"}
    long_subject = orjson.loads(to_structured_event(sdk_event("long", 1)).body)
    long_subject["subject"] = "a" * 65
    refused = await client.post(
        "/v1/events", content=orjson.dumps(long_subject), headers=structured
    )
    _refused(refused, "subject", "at most 64 characters")
    message = to_binary_event(sdk_event("ce-data", 1))
    for name in ("ce-data", "ce-datacontenttype"):
        refused = await client.post(
            "/v1/events",
            content=message.body,
            headers={**backend, **message.headers, name: "x"},
        )
        _refused(refused, name, "not an extension")
    array = await client.post(
        "/v1/events",
        content=b"[" + to_structured_event(sdk_event("arr", 1)).body + b"]",
        headers=structured,
    )
    _refused(array, "", "application/cloudevents-batch+json")
