"""Every error is RFC 9457 problem+json, with a clear status for each kind of bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from allotment.app import create_app
from allotment.deps import public
from tests.factories.customers import create_customer

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


async def test_401_without_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/customers")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_401_with_malformed_header(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/customers", headers={"Authorization": "Basic x"}), 401)


async def test_403_with_wrong_scope(app: Any, client: httpx.AsyncClient) -> None:
    from tests.factories.auth import create_key

    check = await create_key(app, scopes=["check"])
    assert_problem(await client.post("/v1/customers", json={}, headers=check), 403)


async def test_404_unknown_route_and_unknown_customer(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    assert_problem(await client.get("/v1/nothing-here", headers=admin), 404)
    body = assert_problem(await client.get("/v1/customers/ghost", headers=admin), 404)
    assert "ghost" in body["detail"]


async def test_405_wrong_method(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert_problem(await client.put("/v1/customers", json={}, headers=admin), 405)


async def test_409_conflict(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_customer(client, admin, key="acme")
    assert_problem(
        await client.post("/v1/customers", json={"key": "acme", "name": "x"}, headers=admin), 409
    )


async def test_412_stale_if_match(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_customer(client, admin, key="acme")
    response = await client.patch(
        "/v1/customers/acme", json={"name": "x"}, headers={**admin, "If-Match": '"5"'}
    )
    assert_problem(response, 412)


async def test_400_malformed_if_match(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create_customer(client, admin, key="acme")
    response = await client.patch(
        "/v1/customers/acme", json={"name": "x"}, headers={**admin, "If-Match": "abc"}
    )
    assert_problem(response, 400)


async def test_400_malformed_json(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(
        "/v1/customers",
        content=b'{"key": "acme", "name": ',
        headers={**admin, "Content-Type": "application/json"},
    )
    body = assert_problem(response, 400)
    assert body["type"].endswith("/malformed-json")


async def test_415_wrong_content_type(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(
        "/v1/customers",
        content=b"key=acme&name=x",
        headers={**admin, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415)
    response = await client.post("/v1/customers", content=b"{}", headers=admin)
    assert_problem(response, 415)  # no Content-Type at all


async def test_413_oversized_body(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    huge = b'{"key": "acme", "name": "' + b"x" * 2_000_000 + b'"}'
    response = await client.post(
        "/v1/customers", content=huge, headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, 413)


async def test_413_oversized_streamed_body_without_length(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65_536

    response = await client.post(
        "/v1/customers", content=chunks(), headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, 413)


async def test_422_lists_every_problem_with_its_path(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/customers",
        json={"key": "BAD KEY", "nickname": "x", "attributes": []},
        headers=admin,
    )
    body = assert_problem(response, 422)
    paths = sorted(e["path"] for e in body["errors"])
    assert paths == ["attributes", "key", "name", "nickname"]
    assert {"path": "nickname", "message": "Unknown field"} in body["errors"]


async def test_422_on_query_parameters(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = assert_problem(await client.get("/v1/customers?limit=0", headers=admin), 422)
    assert body["errors"][0]["path"] == "query.limit"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("/v1/audit?since=0.0", "query.since"),
        ("/v1/audit?until=1700000000", "query.until"),
        ("/v1/customers/acme/usage?meter=api_calls&from=0", "query.from"),
        ("/v1/customers/acme/usage?meter=api_calls&to=1e9", "query.to"),
        ("/v1/customers/acme/credits?as_of=1764547200", "query.as_of"),
        ("/v1/contracts/ctr_x/invoice-preview?period=2026-12&as_of=.5", "query.as_of"),
    ],
)
async def test_an_instant_in_a_query_is_text_never_a_number(
    client: httpx.AsyncClient, admin: dict[str, str], url: str, path: str
) -> None:
    """Pydantic would read a bare number as seconds since 1970: `since=0.0` is refused with
    its path, not taken as 1970-01-01."""
    body = assert_problem(await client.get(url, headers=admin), 422)
    found = [e for e in body["errors"] if e["path"] == path]
    assert found and "RFC 3339" in found[0]["message"], body


async def test_a_validators_message_comes_without_pydantics_prefix(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="acme")
    body = {"plan": "team", "starts_at": "2027-01-01T00:00:00Z", "discount_percent": 12.5}
    response = await client.post("/v1/customers/acme/contracts", json=body, headers=admin)
    errors = assert_problem(response, 422)["errors"]
    assert [e["path"] for e in errors] == ["discount_percent"]
    assert errors[0]["message"].startswith("write a fractional percent"), errors


async def test_500_is_a_problem_with_request_id_and_no_trace(stores: Any) -> None:
    app = create_app(stores.settings())

    @app.get("/boom", dependencies=[public()])
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/boom")
    body = assert_problem(response, 500)
    assert body["request_id"] == response.headers["x-request-id"]
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize("depth", [200])
async def test_deeply_nested_attributes_are_refused(
    client: httpx.AsyncClient, admin: dict[str, str], depth: int
) -> None:
    nested: Any = "leaf"
    for _ in range(depth):
        nested = {"n": nested}
    response = await client.post(
        "/v1/customers", json={"key": "deep", "name": "D", "attributes": nested}, headers=admin
    )
    assert_problem(response, 422)
