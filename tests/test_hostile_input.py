"""Hostile input: whatever a caller sends, the answer is a clean 4xx problem, never a 500, a
crash or a hang, and an API key never reaches the logs.

    secrets in logs      every request's log lines (access, errors, tracebacks), at DEBUG,
                         for valid, unknown, revoked and wrong-scope keys, on every error path
    body size            over ALLOTMENT_MAX_BODY_BYTES with Content-Length, chunked, and with
                         neither header → 413
    JSON                 10,000 levels of nesting, malformed, invalid UTF-8, NaN/Infinity,
                         huge numbers, duplicate keys, NUL characters, wrong content types
    YAML (policies)      billion laughs (aliases), deep nesting, NUL escapes, tags
    paths and queries    very long values, NUL, invalid percent-encodings

on the endpoints that parse bodies each their own way: POST /v1/check (the fast path,
pydantic-core from bytes), /v1/events (orjson), /v1/customers (FastAPI) and /v1/policies
(stdlib json or PyYAML).
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import structlog
from fastapi import APIRouter

from allotment.app import create_app
from allotment.deps import require
from allotment.kit import logs
from allotment.kit.clock import utcnow
from tests.conftest import Stores, reset
from tests.factories.auth import bearer, create_key
from tests.factories.world import build_world

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A clean refusal: one of `statuses` (any 4xx when none), as a problem document."""
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:500])
    else:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM, response.headers
    body = response.json()
    assert body["status"] == response.status_code
    assert body["type"].startswith("https://") and body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


# -- bodies, per endpoint ------------------------------------------------------------------

JSON_ENDPOINTS = ["/v1/check", "/v1/check/batch", "/v1/events", "/v1/customers", "/v1/policies"]


def valid_body(path: str) -> dict[str, Any]:
    return {
        "/v1/check": {"customer": "acme", "feature": "sso"},
        "/v1/check/batch": {"customer": "acme", "features": ["sso"]},
        "/v1/events": {
            "specversion": "1.0",
            "id": "e-1",
            "source": "tests",
            "type": "api.call",
            "subject": "acme",
            "data": {"count": 1},
        },
        "/v1/customers": {"key": "wayne", "name": "Wayne", "attributes": {}},
        "/v1/policies": {"currency": "USD", "features": {"reports": {}}, "plans": {}},
    }[path]


async def post_raw(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    path: str,
    content: bytes | str,
    content_type: str | None = "application/json",
) -> httpx.Response:
    sent = dict(headers)
    if content_type is not None:
        sent["Content-Type"] = content_type
    return await client.post(path, content=content, headers=sent)


def deep(levels: int, kind: str) -> str:
    if kind == "array":
        return "[" * levels + "]" * levels
    return '{"a":' * levels + "1" + "}" * levels


FREE_FORM = {  # each endpoint's field that takes any JSON (or a mapping of any JSON)
    "/v1/check": "context",
    "/v1/check/batch": "context",
    "/v1/events": "data",
    "/v1/customers": "attributes",
    "/v1/policies": "features",
}


def in_field(path: str, raw_value: str, *, nested: bool = False) -> str:
    """`valid_body(path)` with `raw_value` (raw JSON text) as its free-form field, or as
    the one value in it (`nested`)."""
    body = json.dumps({**valid_body(path), FREE_FORM[path]: "__HOLE__"})
    return body.replace('"__HOLE__"', '{"odd": ' + raw_value + "}" if nested else raw_value)


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("where", ["top", "field"])
@pytest.mark.parametrize("levels", [10_000, 900, 300])
async def test_deeply_nested_json_is_refused_cleanly(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    path: str,
    kind: str,
    where: str,
    levels: int,
) -> None:
    """Past a parser's limit (10,000), just under the stdlib's (900, which every recursive
    walk after parsing must survive), and past orjson's serializer's (300)."""
    text = deep(levels, kind)
    body = text if where == "top" else in_field(path, text, nested=True)
    response = await post_raw(client, admin, path, body)
    if path == "/v1/events" and kind == "array" and where == "top" and response.status_code < 300:
        # Parsed (orjson takes 1,024 levels): a batch of one event that is not an object.
        assert response.json()["rejected"][0]["index"] == 0
        return
    assert_problem(response)
    # The service is still there.
    assert (await client.get("/healthz")).status_code == 200


MALFORMED = {
    "truncated": b'{"customer": "acme", ',
    "trailing garbage": b'{"customer": "acme"} xyz',
    "empty": b"",
    "not json": b"customer=acme&feature=sso",
    "single quotes": b"{'customer': 'acme'}",
    "lone surrogate escape": b'{"customer": "\\ud800", "feature": "\\udfff"}',
    "invalid utf-8": b'{"customer": "\xff\xfe\xfa", "feature": "\xc3\x28"}',
    "utf-16": '{"customer": "acme", "feature": "sso"}'.encode("utf-16"),
    "bom then json": b'\xef\xbb\xbf{"customer": "acme", "feature": "sso"}',
    "raw control char": b'{"customer": "ac\x01me", "feature": "sso"}',
    "raw nul byte": b'{"customer": "acme\x00", "feature": "sso"}',
}


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_malformed_bodies_are_clean_4xx(
    client: httpx.AsyncClient, admin: dict[str, str], path: str, name: str
) -> None:
    response = await post_raw(client, admin, path, MALFORMED[name])
    if name == "bom then json" and response.status_code < 400:
        return  # a UTF-8 BOM may be accepted: it is still UTF-8
    assert_problem(response)


ODD_VALUES = {
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "huge float": "1e400",
    "huge int": "1" + "0" * 5000,
    "big int": str(2**64 + 1),
    "big float": "1e20",
    "tiny float": "1e-300",
    "negative big": "-1e19",
    "nul escape": '"a\\u0000b"',
    "nul key": '{"\\u0000": 1}',
    "lone surrogate": '"\\ud800"',
    "surrogate key": '{"\\udfff": 1}',
    "long string": json.dumps("x" * 900_000),
    "wide object": json.dumps({f"k{i}": i for i in range(20_000)}),
}


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("name", sorted(ODD_VALUES))
async def test_odd_json_values_never_fail_the_server(
    client: httpx.AsyncClient, admin: dict[str, str], path: str, name: str
) -> None:
    """In a free-form field (context, data, attributes, features) a value may be accepted
    or refused, but a refusal is a clean 4xx, and what is accepted can be read back."""
    response = await post_raw(client, admin, path, in_field(path, ODD_VALUES[name], nested=True))
    if response.status_code >= 400:
        assert_problem(response)
    else:
        assert response.status_code in (200, 201), response.text[:300]
        # Whatever was stored reads back as JSON (no NaN, no lost precision surprises).
        assert response.json() is not None
    if path == "/v1/customers" and response.status_code == 201:
        got = await client.get("/v1/customers/wayne", headers=admin)
        assert got.status_code == 200, got.text[:300]


def free_form_targets(odd: str) -> list[tuple[str, str, str]]:
    """(method, path, body) of every request that stores or evaluates free-form JSON, with
    `odd` (raw JSON text) as one value in it."""
    value = '{"odd": ' + odd + "}"
    starts = json.dumps("2024-01-01T00:00:00Z")
    return [
        ("POST", "/v1/customers", '{"key": "wayne", "name": "W", "attributes": ' + value + "}"),
        ("PATCH", "/v1/customers/acme", '{"attributes": ' + value + "}"),
        (
            "POST",
            "/v1/customers/initech/contracts",
            '{"plan": "team", "kind": "standard", "starts_at": '
            + starts
            + ', "attributes": '
            + value
            + "}",
        ),
        (
            "POST",
            "/v1/customers/acme/instances",
            '{"fingerprint": "odd-host", "kind": "vm", "metadata": ' + value + "}",
        ),
        ("POST", "/v1/check", '{"customer": "acme", "feature": "sso", "context": ' + value + "}"),
        (
            "POST",
            "/v1/events",
            '{"specversion": "1.0", "id": "odd-1", "source": "t", "type": "api.call", '
            '"subject": "acme", "data": ' + value + "}",
        ),
    ]


@pytest.mark.parametrize("name", sorted(ODD_VALUES))
async def test_odd_values_in_stored_json_are_kept_or_refused_cleanly(
    client: httpx.AsyncClient, admin: dict[str, str], name: str
) -> None:
    """Attributes, metadata, context and event data take any JSON: each odd value is either
    refused (a clean 4xx) or stored so that it reads back."""
    await build_world(client, admin)
    created = await client.post(
        "/v1/customers", json={"key": "initech", "name": "I"}, headers=admin
    )
    assert created.status_code == 201
    for method, path, body in free_form_targets(ODD_VALUES[name]):
        response = await client.request(
            method, path, content=body, headers={**admin, "Content-Type": "application/json"}
        )
        assert response.status_code < 500, (method, path, response.text[:300])
        if response.status_code >= 400:
            assert_problem(response)
    for path in ("/v1/customers/acme", "/v1/customers/acme/instances", "/v1/customers/wayne"):
        read = await client.get(path, headers=admin)
        assert read.status_code in (200, 404), (path, read.text[:300])
    contracts = await client.get("/v1/customers/initech/contracts", headers=admin)
    assert contracts.status_code == 200, contracts.text[:300]


TEXT_TARGETS = [  # (method, path, body with {s} for a JSON string)
    ("POST", "/v1/customers", '{"key": "wayne", "name": {s}}'),
    ("PATCH", "/v1/customers/acme", '{"name": {s}}'),
    ("POST", "/v1/api-keys", '{"name": {s}, "scopes": ["check"]}'),
    ("POST", "/v1/customers/acme/seats", '{"subject": {s}}'),
    ("POST", "/v1/customers/globex/sessions", '{"subject": {s}}'),
    ("POST", "/v1/customers/acme/instances", '{"fingerprint": {s}, "kind": "vm"}'),
    (
        "POST",
        "/v1/customers/acme/instances",
        '{"fingerprint": "h", "kind": "vm", "environment": {s}}',
    ),
    ("POST", "/v1/customers/acme/tenants", '{"key": {s}}'),
    ("POST", "/v1/check", '{"customer": "acme", "feature": "editor", "subject": {s}}'),
    ("POST", "/v1/check", '{"customer": "acme", "feature": {s}}'),
    ("POST", "/v1/check", '{"customer": "acme", "feature": "api", "consume": 1, "subject": {s}}'),
    ("POST", "/v1/check/batch", '{"customer": "acme", "features": [{s}]}'),
]
EVENT_FIELDS = ["id", "source", "type", "subject", "tenant"]
TEXT_VALUES = {
    "nul": '"a\\u0000b"',
    "lone high surrogate": '"a\\ud800"',
    "lone low surrogate": '"\\udfff"',
    "reversed pair": '"\\udc00\\ud800"',
    "control characters": '"\\u0001\\u001f\\u007f"',
    "long": json.dumps("y" * 200_000),
}


@pytest.mark.parametrize("name", sorted(TEXT_VALUES))
async def test_odd_text_in_every_string_field_is_kept_or_refused_cleanly(
    client: httpx.AsyncClient, admin: dict[str, str], name: str
) -> None:
    await build_world(client, admin)
    value = TEXT_VALUES[name]
    requests = [(method, path, body.replace("{s}", value)) for method, path, body in TEXT_TARGETS]
    base = json.loads(in_field("/v1/events", "1"))
    for field in EVENT_FIELDS:
        event = json.dumps({**base, field: "__HOLE__"}).replace('"__HOLE__"', value)
        requests.append(("POST", "/v1/events", event))
    for method, path, body in requests:
        headers = {**admin, "Content-Type": "application/json"}
        response = await client.request(method, path, content=body, headers=headers)
        assert response.status_code < 500, (method, path, body[:80], response.text[:300])
        if response.status_code >= 400:
            assert_problem(response)
    # Nothing that was stored fails to read back.
    for path in ("/v1/customers", "/v1/api-keys", "/v1/customers/acme/seats"):
        read = await client.get(path, headers=admin)
        assert read.status_code == 200, (path, read.text[:300])


@pytest.mark.parametrize(
    "count",
    ["1e308", "1e300", "1e19", str(2**70), str(2**63), "-5", "0.1", "1e-300", '"7"', "true"],
)
async def test_odd_meter_readings_never_break_usage_checks_or_invoices(
    client: httpx.AsyncClient, admin: dict[str, str], count: str
) -> None:
    """A meter sums what events report: an absurd reading is refused, or counted without
    breaking what reads the sums (usage, metered checks, invoice previews)."""
    world = await build_world(client, admin)
    body = in_field("/v1/events", '{"count": ' + count + "}")
    response = await post_raw(client, admin, "/v1/events", body.replace('"e-1"', '"odd-count"'))
    assert_clean(response)
    twice = await post_raw(client, admin, "/v1/events", body.replace('"e-1"', '"odd-count-2"'))
    assert_clean(twice)
    period = utcnow().strftime("%Y-%m")
    reads = [
        client.get(
            "/v1/customers/acme/usage",
            params={
                "meter": "api_calls",
                "from": f"{period}-01T00:00:00Z",
                "to": "2100-01-01T00:00:00Z",
            },
            headers=admin,
        ),
        client.post("/v1/check", json={"customer": "acme", "feature": "api"}, headers=admin),
        client.post(
            "/v1/check", json={"customer": "acme", "feature": "api", "consume": 1}, headers=admin
        ),
        client.get(
            f"/v1/contracts/{world['acme'].contract}/invoice-preview",
            params={"period": period},
            headers=admin,
        ),
        client.get(
            f"/v1/contracts/{world['acme'].contract}/reconciliation",
            params={"period": period},
            headers=admin,
        ),
        client.get("/v1/invoice-preview", params={"period": period}, headers=admin),
    ]
    for read in reads:
        assert_clean(await read)


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_duplicate_keys_are_not_a_server_error(
    client: httpx.AsyncClient, admin: dict[str, str], path: str
) -> None:
    body = valid_body(path)
    first = next(iter(body.items()))
    pairs = [first, *body.items()]  # the first key twice, with the same value
    text = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
    response = await post_raw(client, admin, path, text)
    if path == "/v1/policies":
        # A policy refuses duplicate keys outright (a silently dropped plan is worse).
        assert_problem(response, 422)
    elif response.status_code >= 400:
        assert_problem(response)


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "multipart/form-data; boundary=x", "application/jsonx", ""],
)
async def test_wrong_content_types_are_415(
    client: httpx.AsyncClient, admin: dict[str, str], path: str, content_type: str
) -> None:
    body = json.dumps(valid_body(path))
    assert_problem(await post_raw(client, admin, path, body, content_type or None), 415)


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_wrong_json_shapes_are_4xx(
    client: httpx.AsyncClient, admin: dict[str, str], path: str
) -> None:
    shapes = ["null", "true", "1", '"acme"', "[]", "[1, 2]", "{}", '{"customer": []}']
    for text in shapes:
        response = await post_raw(client, admin, path, text)
        if path == "/v1/events" and text.startswith("["):
            # A batch answers 200 and rejects each bad event by index.
            assert response.status_code == 200, response.text
            assert len(response.json()["rejected"]) == len(json.loads(text))
            continue
        assert_problem(response)


# -- YAML policies ---------------------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
currency: USD
features: {reports: {description: x}}
plans: {team: {features: [reports], attributes: {blob: *i}}}
"""

YAML_DOCUMENTS = {
    "billion laughs": BILLION_LAUGHS,
    "alias in features": "currency: USD\nx: &x {reports: {}}\nfeatures: *x\nplans: {}\n",
    "deep flow": "[" * 10_000 + "]" * 10_000,
    "deep block": "".join("  " * i + "a:\n" for i in range(2_000)) + "  " * 2_000 + "b\n",
    "deep mapping flow": "{a: " * 10_000 + "1" + "}" * 10_000,
    "python tag": "!!python/object/apply:os.system ['echo hi']\n",
    "binary tag": "currency: !!binary aGk=\nfeatures: {}\nplans: {}\n",
    "timestamp": "currency: 2024-01-01\nfeatures: {}\nplans: {}\n",
    "nul escape": 'currency: USD\nfeatures: {reports: {description: "a\\0b"}}\nplans: {}\n',
    "nul key": 'currency: USD\nfeatures: {"a\\0": {}}\nplans: {}\n',
    "raw nul": "currency: USD\x00\nfeatures: {}\n",
    "tab indent": "currency: USD\nfeatures:\n\treports: {}\n",
    "multi document": "currency: USD\n---\ncurrency: EUR\n",
    "merge key loop": "a: &a {<<: *a}\n",
    "huge int": "currency: USD\nfeatures: {}\nplans: {}\nx: " + "9" * 5000 + "\n",
    "nan": "currency: USD\nfeatures: {reports: {description: .nan}}\nplans: {}\n",
    "invalid utf-8": b"currency: \xff\xfe\n".decode("latin-1"),
    "duplicate keys": "currency: USD\ncurrency: EUR\nfeatures: {}\nplans: {}\n",
}


@pytest.mark.parametrize("name", sorted(YAML_DOCUMENTS))
async def test_hostile_yaml_policies_are_refused_cleanly(
    client: httpx.AsyncClient, admin: dict[str, str], name: str
) -> None:
    text = YAML_DOCUMENTS[name]
    content = text.encode("latin-1") if name == "invalid utf-8" else text.encode()
    response = await post_raw(client, admin, "/v1/policies", content, "application/yaml")
    assert_problem(response)


async def test_billion_laughs_is_refused_fast(client: httpx.AsyncClient, admin: dict[str, str]):
    import time

    started = time.perf_counter()
    response = await post_raw(client, admin, "/v1/policies", BILLION_LAUGHS, "application/yaml")
    assert_problem(response, 422)
    assert time.perf_counter() - started < 5.0


EXTREME_POLICY = {  # (plan, path inside the plan, value)
    "seat limit": ("team", ("seats", "limit"), 10**20),
    "guest seats": ("team", ("seats", "guests"), 10**20),
    "burst extra": ("team", ("seats", "burst", "extra"), 10**20),
    "burst window": ("team", ("seats", "burst", "window"), "99999999999d"),
    "instance limit": ("team", ("instances", "limit"), 10**20),
    "instance weight": ("team", ("instances", "kinds", "vm"), 10**20),
    "lease ttl": ("team", ("instances", "lease_ttl"), "99999999999d"),
    "session ttl": ("floating", ("seats", "session_ttl"), "99999999999d"),
    "meter limit": ("team", ("limits", "api_calls", "limit"), 10**30),
    "base price": ("team", ("price", "base"), "9" * 40 + ".00"),
    "included seats": ("team", ("price", "seat", "included"), 10**20),
    "tier bound": ("team", ("price", "meters", "api_calls", "tiers", 0, "up_to"), 10**30),
    # The largest values a policy takes must work all the way through.
    "max seat limit": ("team", ("seats", "limit"), 10**9),
    "max guest seats": ("team", ("seats", "guests"), 10**9),
    "max burst extra": ("team", ("seats", "burst", "extra"), 10**9),
    "max instance weight": ("team", ("instances", "kinds", "vm"), 10**9),
    "max instance limit": ("team", ("instances", "limit"), 10**9),
    "max meter limit": ("team", ("limits", "api_calls", "limit"), 10**9),
    "max included units": ("team", ("price", "meters", "api_calls", "included"), 10**15),
    "max tier bound": ("team", ("price", "meters", "api_calls", "tiers", 0, "up_to"), 10**15),
}


@pytest.mark.parametrize("name", sorted(EXTREME_POLICY))
async def test_extreme_numbers_in_a_policy_are_refused_or_survive_use(
    client: httpx.AsyncClient, admin: dict[str, str], name: str
) -> None:
    """A policy is validated when posted; whatever it lets through must then work for every
    contract on it: seats, instances, sessions, checks, invoices (no integer overflow in a
    column, no timedelta overflow)."""
    from tests.factories.policies_for_contracts import demo_document

    plan, path, value = EXTREME_POLICY[name]
    document = demo_document()
    target = document["plans"][plan]
    for step in path[:-1]:
        target = target.setdefault(step, {}) if isinstance(step, str) else target[step]
    target[path[-1]] = value
    created = await client.post("/v1/policies", json=document, headers=admin)
    assert_clean(created)
    if name.startswith("max "):
        assert created.status_code == 201, created.text
    if created.status_code >= 400:
        return
    published = await client.post(
        f"/v1/policies/{created.json()['version']}/publish", headers=admin
    )
    assert_clean(published)
    if published.status_code >= 400:
        return
    await client.post("/v1/customers", json={"key": "acme", "name": "A"}, headers=admin)
    contract = await client.post(
        "/v1/customers/acme/contracts",
        json={"plan": plan, "kind": "standard", "starts_at": "2024-01-01T00:00:00Z"},
        headers=admin,
    )
    assert_clean(contract)
    period = utcnow().strftime("%Y-%m")
    steps = [
        ("POST", "/v1/customers/acme/seats", {"subject": "ann"}),
        ("POST", "/v1/customers/acme/seats", {"subject": "guest", "type": "guest"}),
        ("POST", "/v1/customers/acme/sessions", {"subject": "bob"}),
        ("POST", "/v1/customers/acme/instances", {"fingerprint": "h1", "kind": "vm"}),
        ("POST", "/v1/check", {"customer": "acme", "feature": "editor", "subject": "ann"}),
        ("POST", "/v1/check", {"customer": "acme", "feature": "api", "consume": 5}),
        ("GET", "/v1/customers/acme/entitlements", None),
        ("GET", f"/v1/invoice-preview?period={period}", None),
    ]
    if contract.status_code < 400:
        contract_id = contract.json()["id"]
        steps.append(("GET", f"/v1/contracts/{contract_id}/invoice-preview?period={period}", None))
    for method, url, body in steps:
        assert_clean(await client.request(method, url, json=body, headers=admin))


# -- body size -------------------------------------------------------------------------------


@pytest.fixture
def limit(app: Any) -> int:
    return int(app.state.settings.max_body_bytes)


def oversized(path: str, size: int) -> bytes:
    """A well-formed body of `path`, padded past `size` bytes inside a string."""
    body = valid_body(path)
    pad_field = {"/v1/policies": "currency"}.get(path, "pad")
    body[pad_field] = "x" * (size + 1)
    return json.dumps(body).encode()


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_oversized_body_with_content_length_is_413(
    client: httpx.AsyncClient, admin: dict[str, str], path: str, limit: int
) -> None:
    response = await post_raw(client, admin, path, oversized(path, limit))
    assert_problem(response, 413)


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_oversized_chunked_body_is_413(
    client: httpx.AsyncClient, admin: dict[str, str], path: str, limit: int
) -> None:
    payload = oversized(path, limit)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    response = await client.post(
        path, content=chunks(), headers={**admin, "Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


async def test_a_body_without_length_or_chunking_is_still_bounded(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], limit: int
) -> None:
    """HTTP/2 needs neither header: the limit must hold for a body that just streams."""
    payload = oversized("/v1/customers", limit)
    step = 64 * 1024
    status, body, _ = await asgi_call(
        app,
        "POST",
        "/v1/customers",
        headers={**admin, "Content-Type": "application/json"},
        chunks=[payload[i : i + step] for i in range(0, len(payload), step)],
    )
    assert status == 413, (status, body[:300])


@pytest.mark.parametrize(
    "value, status", [("abc", 400), ("-1", 400), ("1e9", 400), (" ", 400), ("9" * 30, 413)]
)
async def test_bad_content_length_is_refused(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], value: str, status: int
) -> None:
    answered, body, headers = await asgi_call(
        app,
        "POST",
        "/v1/customers",
        headers={**admin, "Content-Type": "application/json", "Content-Length": value},
        chunks=[b"{}"],
    )
    assert answered == status, (answered, body)
    assert headers.get("content-type") == PROBLEM


async def asgi_call(
    app: Any,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    chunks: list[bytes],
    query: bytes = b"",
) -> tuple[int, bytes, dict[str, str]]:
    """One raw ASGI request: headers exactly as given (no Content-Length added), the body
    in `chunks`. Returns (status, body, headers)."""
    pending = list(chunks)
    started: dict[str, Any] = {}
    parts: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    response_headers = {
        k.decode("latin-1"): v.decode("latin-1") for k, v in started.get("headers", [])
    }
    return started["status"], b"".join(parts), response_headers


# -- paths and queries -----------------------------------------------------------------------

PATHS = [
    "/v1/customers/{x}",
    "/v1/customers/{x}/contracts",
    "/v1/customers/{x}/entitlements",
    "/v1/customers/{x}/artifact",
    "/v1/customers/{x}/seats",
    "/v1/customers/{x}/tenants/{x}",
    "/v1/contracts/{x}",
    "/v1/contracts/{x}/invoice-preview?period=2024-01",
    "/v1/instances/{x}",
    "/v1/sessions/{x}",
    "/v1/policies/{x}",
    "/v1/api-keys/{x}",
]

PATH_VALUES = {
    "very long": "a" * 30_000,
    "long unicode": "é" * 5_000,
    "nul": "%00",
    "nul inside": "acme%00x",
    "control": "%01%1f",
    "bad percent": "%zz%",
    "dots": "..%2F..%2Fetc",
    "encoded slash": "acme%2Fglobex",
    "overlong utf-8": "%C0%AF",
    "invalid utf-8": "%FF%FE",
    "huge number": "9" * 400,
}


def assert_clean(response: httpx.Response) -> None:
    """Never a server error; any refusal is a problem document."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert_problem(response)


@pytest.mark.parametrize("template", PATHS)
@pytest.mark.parametrize("name", sorted(PATH_VALUES))
async def test_hostile_path_parameters_are_clean(
    client: httpx.AsyncClient, admin: dict[str, str], template: str, name: str
) -> None:
    url = template.replace("{x}", PATH_VALUES[name])
    for method in ("GET", "DELETE", "PATCH", "POST"):
        response = await client.request(
            method, url, headers=admin, json={} if method in ("PATCH", "POST") else None
        )
        assert_clean(response)
        if "nul" in name:
            assert_problem(response, 400)
    if template.endswith(("/entitlements", "/artifact")):
        # Not a customer key: refused as /v1/check refuses it, not looked up and echoed.
        assert (await client.get(url, headers=admin)).status_code in (400, 404, 422)


QUERIES = [
    "/v1/audit?actor={x}",
    "/v1/audit?target={x}",
    "/v1/audit?cursor={x}",
    "/v1/decisions?customer={x}",
    "/v1/decisions?feature={x}",
    "/v1/customers?cursor={x}",
    "/v1/customers?limit={x}",
    "/v1/customers/acme/usage?meter={x}&from=2024-01-01T00:00:00Z&to=2024-02-01T00:00:00Z",
    "/v1/customers/acme/usage?meter=api_calls&from={x}&to=2024-02-01T00:00:00Z",
    "/v1/invoice-preview?period={x}",
    "/v1/policies/1/diff?against={x}",
]


@pytest.mark.parametrize("template", QUERIES)
@pytest.mark.parametrize("name", sorted(PATH_VALUES))
async def test_hostile_query_values_are_clean(
    client: httpx.AsyncClient, admin: dict[str, str], template: str, name: str
) -> None:
    response = await client.get(template.replace("{x}", PATH_VALUES[name]), headers=admin)
    assert_clean(response)
    if "nul" in name:
        assert_problem(response, 400)


@pytest.mark.parametrize(
    "period", ["0000-01", "9999-12", "2024-00", "2024-13", "٢٠٢٤-٠١", "2024-1"]
)
async def test_impossible_periods_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], period: str
) -> None:
    world = await build_world(client, admin)
    contract = world["acme"].contract
    for path in (
        "/v1/invoice-preview",
        f"/v1/contracts/{contract}/invoice-preview",
        f"/v1/contracts/{contract}/reconciliation",
    ):
        response = await client.get(path, params={"period": period}, headers=admin)
        assert_problem(response, 422)


# -- API keys never reach the logs -----------------------------------------------------------


@pytest.fixture
async def logged(stores: Stores, app: Any) -> AsyncIterator[tuple[Any, io.BytesIO]]:
    """A second app at DEBUG whose every log line (structlog and stdlib) goes to a buffer;
    the global logging configuration is put back afterwards."""
    saved = structlog.get_config()
    root = __import__("logging").getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)
    application = create_app(stores.settings(log_level="DEBUG"))
    logs.configure("DEBUG", json=True, stream=stream)

    boom = APIRouter()

    @boom.get("/v1/test-boom", dependencies=[require()])
    async def explode() -> None:
        raise RuntimeError("an unexpected failure")

    application.include_router(boom)
    try:
        async with application.router.lifespan_context(application):
            await reset(application)
            yield application, buffer
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


async def test_api_keys_never_appear_in_logs(logged: tuple[Any, io.BytesIO]) -> None:
    application, buffer = logged
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    admin = await create_key(application, scopes=["admin"])
    finance = await create_key(application, scopes=["finance"])
    revoked = await create_key(application, scopes=["admin"])
    unknown = bearer("alm_" + secrets.token_urlsafe(32))
    not_ours = bearer("sk_live_" + secrets.token_urlsafe(24))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        revoked_id = (await http.get("/v1/api-keys", headers=admin)).json()["items"][-1]["id"]
        assert (await http.delete(f"/v1/api-keys/{revoked_id}", headers=admin)).status_code == 204
        minted = await http.post(
            "/v1/api-keys",
            json={"name": "minted", "scopes": ["check"]},
            headers={**admin, "Idempotency-Key": "mint-1"},
        )
        assert minted.status_code == 201
        minted_key = bearer(minted.json()["key"])
        keys = [admin, finance, revoked, unknown, not_ours, minted_key]
        requests: list[Callable[[dict[str, str]], Any]] = [
            lambda h: http.get("/v1/customers", headers=h),  # 200 / 401 / 403
            lambda h: http.get("/v1/customers/ghost", headers=h),  # 404
            lambda h: http.post("/v1/customers", json={"key": "Bad Key"}, headers=h),  # 422
            lambda h: http.post(
                "/v1/customers", content=b"{", headers={**h, "Content-Type": "application/json"}
            ),  # 400
            lambda h: http.post(
                "/v1/customers", content=b"x", headers={**h, "Content-Type": "text/plain"}
            ),  # 415
            lambda h: http.post(
                "/v1/customers",
                content=b"x" * (application.state.settings.max_body_bytes + 1),
                headers={**h, "Content-Type": "application/json"},
            ),  # 413
            lambda h: http.post("/v1/check", json={"customer": "acme", "feature": "x"}, headers=h),
            lambda h: http.post("/v1/check", content=b"{", headers=h),
            lambda h: http.post("/v1/events", content=b"[", headers=h),
            lambda h: http.get("/v1/test-boom", headers=h),  # 500 (and a traceback) for admin
            lambda h: http.get("/v1/nothing-here", headers=h),  # 404, no route
            lambda h: http.put("/v1/customers", headers=h),  # 405
            lambda h: http.patch(
                "/v1/customers/ghost", json={}, headers={**h, "If-Match": h["Authorization"]}
            ),
        ]
        statuses = set()
        for headers in keys:
            for send in requests:
                statuses.add((await send(headers)).status_code)
            # The key in other headers a proxy might log.
            await http.get(
                "/v1/customers",
                headers={**headers, "X-Api-Key": headers["Authorization"][7:]},
            )
    assert {200, 401, 403, 404, 405, 413, 415, 422, 500} <= statuses, statuses
    await application.state.checker.decisions.flush()
    text = buffer.getvalue().decode("utf-8", "replace")
    lines = text.splitlines()
    assert len(lines) > 80, text[:2000]
    assert any('"unhandled_exception"' in line for line in lines)
    assert any('"status":401' in line for line in lines)
    for headers in keys:
        secret = headers["Authorization"].removeprefix("Bearer ")
        # Nor any long part of it (a truncated or re-encoded key is still a leak). Asserted
        # on a flag, so that a failure does not print the secret or the logs.
        leaked = any(secret[i : i + 16] in text for i in range(0, len(secret) - 15, 4))
        assert not leaked, f"an API key reached the logs: {secret[:8]}…"


# -- a hostile check does not cost other callers their decision records ------------------


async def test_a_nul_in_a_check_is_refused_or_kept_out_of_the_decision_log(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Denials are always logged, in batches; one record PostgreSQL cannot store must not
    drop the batch with everybody else's."""
    world = await build_world(client, admin)
    del world
    hostile = {"customer": "acme", "feature": "nope", "subject": "a\u0000b"}
    response = await post_raw(client, admin, "/v1/check", json.dumps(hostile))
    if response.status_code >= 400:
        assert_problem(response)
    honest = await client.post(
        "/v1/check", json={"customer": "acme", "feature": "nope"}, headers=admin
    )
    assert honest.status_code == 200 and honest.json()["allowed"] is False
    await app.state.checker.decisions.flush()
    logged = await client.get("/v1/decisions?customer=acme", headers=admin)
    ids = [d["decision_id"] for d in logged.json()["items"]]
    assert honest.json()["decision_id"] in ids
