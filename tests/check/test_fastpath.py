"""The /v1/check fast path answers without the router, and only for the check endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from allotment.check.fastpath import CheckFastPath
from tests.factories.auth import create_key


async def _call(app: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[Any, list[Any]]:
    passed_through = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        passed_through.append(scope["path"])

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": app,
        "state": {},
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await CheckFastPath(inner)(scope, receive, send)
    return passed_through, sent


async def test_check_is_served_without_the_router(app: Any, client: httpx.AsyncClient) -> None:
    key = await create_key(app, scopes=["check"])
    body = orjson.dumps({"customer": "ghost", "feature": "reports"})
    passed, sent = await _call(app, "/v1/check", body, {**key, "Content-Type": "application/json"})
    assert passed == []
    assert sent[0]["status"] == 200
    assert orjson.loads(sent[1]["body"])["reason"] == "customer_unknown"


async def test_fast_path_enforces_the_same_guard(app: Any, client: httpx.AsyncClient) -> None:
    finance = await create_key(app, scopes=["finance"])
    body = orjson.dumps({"customer": "ghost", "feature": "reports"})
    _, sent = await _call(app, "/v1/check", body, finance)
    assert sent[0]["status"] == 403
    _, sent = await _call(app, "/v1/check", body, {})
    assert sent[0]["status"] == 401


async def test_other_paths_pass_through(app: Any, client: httpx.AsyncClient) -> None:
    passed, sent = await _call(app, "/v1/customers", b"{}", {})
    assert passed == ["/v1/customers"] and sent == []
