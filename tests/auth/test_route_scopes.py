"""Every route declares who may call it, and the declaration is enforced.

Walks the app's routes: a route that declares neither `require(...)` nor `public()` fails
the test, so a new endpoint cannot ship unguarded. For each guarded route it then sends a
request with no key (401), an unknown key (401), a key with only the wrong scopes (403) and
an admin key (anything but 401/403).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from allotment.deps import Public, Require
from tests.factories.auth import create_key

ALL_SCOPES = ["admin", "check", "finance", "customer:acme"]


def api_routes(app: Any) -> list[APIRoute]:
    try:
        from fastapi.routing import iter_route_contexts

        routes = [ctx.original_route for ctx in iter_route_contexts(app.routes)]
    except ImportError:  # older FastAPI: routes are flat already
        routes = list(app.routes)
    return [r for r in routes if isinstance(r, APIRoute)]


def guards(route: APIRoute) -> list[Any]:
    found: list[Any] = []

    def walk(dependant: Any) -> None:
        if isinstance(dependant.call, Require | Public):
            found.append(dependant.call)
        for sub in dependant.dependencies:
            walk(sub)

    walk(route.dependant)
    return found


def sample_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "acme", path)


def test_every_route_declares_exactly_one_guard(app: Any) -> None:
    routes = api_routes(app)
    assert len(routes) >= 10
    missing = [f"{sorted(r.methods)} {r.path}" for r in routes if len(guards(r)) != 1]
    assert not missing, f"routes without exactly one require()/public(): {missing}"


async def test_guards_are_enforced(app: Any, client: httpx.AsyncClient) -> None:
    keys = {scope: await create_key(app, scopes=[scope]) for scope in ALL_SCOPES}
    checked = 0
    for route in api_routes(app):
        (guard,) = guards(route)
        if isinstance(guard, Public):
            continue
        for method in route.methods - {"HEAD"}:
            path = sample_path(route.path)
            send = lambda headers, m=method, p=path: client.request(  # noqa: E731
                m, p, headers=headers, json={} if m in {"POST", "PATCH"} else None
            )
            assert (await send({})).status_code == 401, path
            assert (await send({"Authorization": "Bearer alm_nope"})).status_code == 401, path
            allowed = {"admin", *guard.scopes}
            is_read = method == "GET"
            for scope, headers in keys.items():
                status = (await send(headers)).status_code
                # A customer-scoped key reads its own customer where the path names it (on
                # GET) or, on OFREP's evaluations, where the body does (the body sent here
                # names none, so the key's own customer is evaluated).
                by_path = guard.customer_param and is_read
                by_body = getattr(guard, "customer_in_body", False)
                by_customer = scope == "customer:acme" and (by_path or by_body)
                if scope in allowed or by_customer:
                    assert status not in (401, 403), (scope, method, path, status)
                else:
                    assert status == 403, (scope, method, path, status)
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
async def test_public_routes_need_no_key(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200
