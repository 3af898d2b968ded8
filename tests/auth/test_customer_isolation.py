"""A `customer:acme` key sees acme's data and nothing else, and changes nothing at all.

Walks every route of the app (as tests/auth/test_route_scopes.py does) with a key scoped to
acme, against a world where acme and globex each have a contract, a tenant, an instance, a
seat or a session, and usage (tests/factories/world.py). For each route and method:

    customer-readable GET (the guard names the `{key}` path parameter)
        acme's own path      2xx, acme's data, nothing of globex's
        globex's path        403
    OFREP evaluations (the body's context names the customer)
        acme in the context  200
        globex               403
    everything else — writes of either customer's data, routes keyed by ids (contracts,
    sessions, instances, …), global lists (customers, audit, decisions, invoice previews,
    policies, API keys), checks and events
                             403, with either customer's ids

and no response to the acme key, whatever its status, carries anything of globex's (the
problem document's `instance`, which echoes the request path, aside). Public routes are
checked not to mention any customer.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi.routing import APIRoute

from allotment.deps import Public, Require
from allotment.kit.pagination import MAX_LIMIT
from tests.factories.auth import create_key
from tests.factories.world import Tenancy, World, build_world

READS = frozenset({"GET", "HEAD"})
GLOBAL_LISTS = [
    "/v1/customers",
    "/v1/audit",
    "/v1/audit/verify",
    "/v1/decisions",
    "/v1/invoice-preview?period={period}",
    "/v1/policies",
    "/v1/policies/active",
    "/v1/policies/schema",
    "/v1/api-keys",
    "/v1/changelog",
    "/v1/webhook-endpoints",
]


def api_routes(app: Any) -> list[APIRoute]:
    try:
        from fastapi.routing import iter_route_contexts

        routes = [ctx.original_route for ctx in iter_route_contexts(app.routes)]
    except ImportError:  # older FastAPI: routes are flat already
        routes = list(app.routes)
    return [r for r in routes if isinstance(r, APIRoute)]


def guard_of(route: APIRoute) -> Require | Public:
    found: list[Any] = []
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Require | Public):
            found.append(dependant.call)
        pending.extend(dependant.dependencies)
    (guard,) = found  # test_route_scopes.py holds every route to exactly one
    return guard  # type: ignore[no-any-return]


def path_for(route: APIRoute, owner: Tenancy, world: World) -> str:
    """The route's path with every parameter naming `owner`'s objects (OFREP's `{key}` is a
    flag's: a feature every customer of the world has)."""
    values = {
        "key": "reports" if route.path.startswith("/ofrep/") else owner.key,
        "contract_id": owner.contract,
        "tenant": owner.tenant,
        "instance_id": owner.instance,
        "session_id": owner.session or "ses_none",
        "subject": owner.seat_subject or f"nobody@{owner.key}",
        "version": str(world.policy_version),
        "key_id": "key_none",
        "endpoint_id": "whe_none",  # webhook endpoints and deliveries: admin routes
        "delivery_id": "whd_none",
    }

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"{route.path}: no {owner.key} value for {{{name}}}"
        return values[name]

    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", value, route.path)


def query_for(route: APIRoute) -> dict[str, str]:
    """The required query parameters of `route`, with sensible values."""
    from allotment.kit.clock import utcnow

    month = utcnow().strftime("%Y-%m")
    known = {
        "period": month,
        "meter": "api_calls",
        "from": f"{month}-01T00:00:00Z",
        "to": "2100-01-01T00:00:00Z",
    }
    wanted = [p.alias or p.name for p in route.dependant.query_params if p.field_info.is_required()]
    return {name: known[name] for name in wanted}


def markers(owner: Tenancy) -> list[str]:
    """Strings that appear only in `owner`'s data."""
    found = [owner.key, owner.contract, owner.tenant, owner.instance]
    found += [m for m in (owner.session, owner.seat_subject) if m]
    return found


def searchable(response: httpx.Response) -> str:
    """The response as text to search; a signed artifact (application/jose) with its
    payload decoded, since base64url would hide any marker."""
    if response.headers.get("content-type") != "application/jose":
        return response.text
    segments = response.text.split(".")
    payload = segments[1] if len(segments) == 3 else ""
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return response.text + "\n" + decoded.decode("utf-8", "replace")


def leaked(response: httpx.Response, other: Tenancy) -> list[str]:
    """`other`'s markers in the response that the request did not carry itself (a problem
    document echoes the path, and may name the id it could not find)."""
    request = response.request
    sent = unquote(str(request.url)) + request.content.decode("utf-8", "replace")
    text = searchable(response)
    return [m for m in markers(other) if m in text and m not in sent]


def body_for(route: APIRoute, method: str, owner: Tenancy) -> Any:
    """A plausible body, so that nothing but the key can be the reason for a refusal."""
    if method not in ("POST", "PATCH", "PUT"):
        return None
    path = route.path
    if path.endswith("/seats") or path.endswith("/sessions"):
        return {"subject": f"new@{owner.key}"}
    if path.endswith("/instances"):
        return {"fingerprint": f"{owner.key}-new", "kind": "vm"}
    if path.endswith("/tenants"):
        return {"key": "new-tenant"}
    if path.endswith("/contracts"):
        return {"plan": "team", "kind": "standard", "starts_at": "2030-01-01T00:00:00Z"}
    if path == "/v1/check":
        return {"customer": owner.key, "feature": "sso"}
    if path == "/v1/check/batch":
        return {"customer": owner.key, "features": ["sso"]}
    if path.startswith("/ofrep/"):
        return {"context": {"customer": owner.key, "targetingKey": f"user@{owner.key}"}}
    if path == "/v1/events":
        return {
            "specversion": "1.0",
            "id": f"iso-{owner.key}",
            "source": "isolation",
            "type": "api.call",
            "subject": owner.key,
            "data": {"count": 1},
        }
    if path == "/v1/customers":
        return {"key": "intruder", "name": "Intruder"}
    if path.startswith("/v1/customers/"):
        return {"name": "Renamed"}
    if path.startswith("/v1/contracts/"):
        return {"seats": {"limit": 1}}
    if path == "/v1/api-keys":
        return {"name": "escalate", "scopes": ["admin"]}
    if path == "/v1/policies/rollback":
        return {"to_version": 1}
    return {}


@pytest.fixture
async def world(client: httpx.AsyncClient, admin: dict[str, str]) -> World:
    return await build_world(client, admin)


@pytest.fixture
async def acme_key(app: Any, world: World) -> dict[str, str]:
    return await create_key(app, scopes=["customer:acme"])


async def test_a_customer_key_reaches_only_its_own_data_on_every_route(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    world: World,
    acme_key: dict[str, str],
) -> None:
    acme, globex = world["acme"], world["globex"]
    readable: list[str] = []
    refused: list[str] = []
    evaluated: list[str] = []
    for route in api_routes(app):
        guard = guard_of(route)
        for method in sorted(route.methods):
            if isinstance(guard, Public):
                response = await client.request(method, route.path)
                assert not leaked(response, globex) and not leaked(response, acme), route.path
                continue
            own = await client.request(
                method,
                path_for(route, acme, world),
                params=query_for(route),
                json=body_for(route, method, acme),
                headers=acme_key,
            )
            theirs = await client.request(
                method,
                path_for(route, globex, world),
                params=query_for(route),
                json=body_for(route, method, globex),
                headers=acme_key,
            )
            label = f"{method} {route.path}"
            for response in (own, theirs):
                assert not leaked(response, globex), (label, leaked(response, globex))
            assert theirs.status_code == 403, (label, "globex", theirs.status_code, theirs.text)
            if getattr(guard, "customer_in_body", False):
                # OFREP: the body names the customer; a customer key evaluates its own.
                assert own.status_code == 200, (label, own.status_code, own.text)
                evaluated.append(label)
            elif guard.customer_param and method in READS:
                assert 200 <= own.status_code < 300, (label, own.status_code, own.text)
                assert acme.key in searchable(own), (label, own.text[:300])
                readable.append(label)
            else:
                assert own.status_code == 403, (label, "acme", own.status_code, own.text)
                refused.append(label)
    # What the walk covered: every customer-scoped read, and every write and global route.
    assert len(readable) >= 7, readable
    assert len(refused) >= 30, refused
    assert len(evaluated) == 2, evaluated
    assert not [label for label in readable if not label.startswith("GET ")], readable


async def test_nothing_was_changed_by_the_customer_key(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    world: World,
    acme_key: dict[str, str],
) -> None:
    """After every write of the walk was refused, both customers are as they were."""
    before = await snapshot(client, admin)
    await test_a_customer_key_reaches_only_its_own_data_on_every_route(
        app, client, admin, world, acme_key
    )
    assert await snapshot(client, admin) == before


async def snapshot(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """Everything the walk could have touched, read as admin."""
    state: dict[str, Any] = {}
    for key in ("acme", "globex"):
        for part in ("", "/contracts", "/tenants", "/seats", "/instances"):
            response = await client.get(f"/v1/customers/{key}{part}", headers=admin)
            assert response.status_code == 200, response.text
            body = response.json()
            for item in body.get("items", []):
                item.pop("lease_expires_at", None)
            state[f"{key}{part}"] = body
    for path in ("/v1/customers", "/v1/policies", "/v1/api-keys"):
        state[path] = (await client.get(path, headers=admin)).json()
    # The walk's reads leave two kinds of audit record, and only these: acme's own signed
    # artifact (issuing one is audited), and the signing keys made on first use.
    audit = await client.get("/v1/audit", params={"limit": MAX_LIMIT}, headers=admin)
    assert audit.status_code == 200 and audit.json()["next_cursor"] is None
    state["/v1/audit"] = [
        item
        for item in audit.json()["items"]
        if item["action"] != "artifact.issued" and not item["action"].startswith("signing_key.")
    ]
    return state


@pytest.mark.parametrize("template", GLOBAL_LISTS)
async def test_global_lists_are_refused_to_a_customer_key(
    client: httpx.AsyncClient, world: World, acme_key: dict[str, str], template: str
) -> None:
    from allotment.kit.clock import utcnow

    path = template.format(period=utcnow().strftime("%Y-%m"))
    response = await client.get(path, headers=acme_key)
    assert response.status_code == 403, response.text
    assert not leaked(response, world["globex"]) and not leaked(response, world["acme"])


@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers/GLOBEX",
        "/v1/customers/globex%20",
        "/v1/customers/%67lobex",  # percent-encoded: still globex
        "/v1/customers/acme%2F..%2Fglobex",
        "/v1/customers/acme%2Fcontracts",
        "/v1/customers/acme,globex/contracts",
        "/v1/customers/globex/contracts?key=acme",
        "/v1/customers/globex/entitlements?customer=acme",
        "/v1/customers/globex/usage?meter=api_calls&from=2024-01-01T00:00:00Z&to=2100-01-01T00:00:00Z",
        "/v1/decisions?customer=acme",
        "/v1/audit?target=customer:acme",
    ],
)
async def test_tricked_paths_do_not_cross_customers(
    client: httpx.AsyncClient, world: World, acme_key: dict[str, str], path: str
) -> None:
    response = await client.get(path, headers=acme_key)
    # Some of these decode to acme's own paths (Starlette decodes %2F before routing): a
    # 200 then, with acme's data only.
    assert response.status_code in (200, 403, 404), (response.status_code, response.text)
    assert not leaked(response, world["globex"])
    if "globex" in unquote(path).split("?")[0].lower().replace("%20", ""):
        assert response.status_code in (403, 404), response.text


async def test_ids_of_the_other_customer_under_ones_own_key_find_nothing(
    client: httpx.AsyncClient, world: World, acme_key: dict[str, str]
) -> None:
    """acme's readable routes take acme's key; a globex id under it resolves to nothing."""
    globex = world["globex"]
    response = await client.get(f"/v1/customers/acme/tenants/{globex.tenant}", headers=acme_key)
    assert response.status_code == 404, response.text
    assert not leaked(response, globex)
    for part in ("contracts", "tenants", "seats", "instances"):
        listed = await client.get(f"/v1/customers/acme/{part}", headers=acme_key)
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"], part
        assert not leaked(listed, globex), part


async def test_the_check_fast_path_refuses_a_customer_key(
    client: httpx.AsyncClient, world: World, acme_key: dict[str, str]
) -> None:
    """/v1/check is served outside FastAPI's router; its guard must still hold, for the
    key's own customer too (a check may consume), and with any body."""
    for customer in ("acme", "globex"):
        for body in (
            {"customer": customer, "feature": "sso"},
            {"customer": customer, "feature": "api", "consume": 1},
            {"customer": customer, "features": ["sso"]},
        ):
            path = "/v1/check/batch" if "features" in body else "/v1/check"
            response = await client.post(path, json=body, headers=acme_key)
            assert response.status_code == 403, (path, body, response.text)
        broken = await client.post(
            "/v1/check", content=b"{", headers={**acme_key, "Content-Type": "application/json"}
        )
        assert broken.status_code == 403, broken.text  # the key first, then the body
