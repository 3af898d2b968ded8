"""One definition per identifier (allotment/kit/identifiers.py), honoured by every route.

A value one route accepts is never refused by another: the longest valid subject,
fingerprint and tenant key go through allocation and check end to end, and one character
more is a 422 naming the field on every route that takes it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from allotment.kit.identifiers import MAX_FINGERPRINT, MAX_KEY, MAX_SUBJECT
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy

SUBJECT = "s" * MAX_SUBJECT
FINGERPRINT = "f" * MAX_FINGERPRINT
TENANT = "t" * MAX_KEY


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="enterprise")
    return "acme"


def _paths(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [error["path"] for error in response.json()["errors"]]


INS, CHECK, BATCH = "/v1/customers/acme/instances", "/v1/check", "/v1/check/batch"
SU1, FP1, TE1 = SUBJECT + "s", FINGERPRINT + "f", TENANT + "t"  # one character too many
TOO_LONG: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/customers/acme/seats", {"subject": SU1}, "subject"),
    ("/v1/customers/acme/seats", {"subject": "ann", "tenant": TE1}, "tenant"),
    ("/v1/customers/acme/sessions", {"subject": SU1}, "subject"),
    ("/v1/customers/acme/sessions", {"subject": "ann", "tenant": TE1}, "tenant"),
    (INS, {"fingerprint": FP1, "kind": "vm"}, "fingerprint"),
    (INS, {"fingerprint": "h", "kind": "vm", "environment": "e" * 129}, "environment"),
    (INS, {"fingerprint": "h", "kind": "k" * 64}, "kind"),
    (INS, {"fingerprint": "h", "kind": "vm", "tenant": TE1}, "tenant"),
    (CHECK, {"customer": "acme", "feature": "editor", "subject": SU1}, "subject"),
    (CHECK, {"customer": "acme", "feature": "agent", "instance": FP1}, "instance"),
    (CHECK, {"customer": "acme", "feature": "editor", "tenant": TE1}, "tenant"),
    (CHECK, {"customer": "acme", "feature": "f" * 64}, "feature"),
    (CHECK, {"customer": "c" * (MAX_KEY + 1), "feature": "editor"}, "customer"),
    (BATCH, {"customer": "acme", "features": ["editor"], "subject": SU1}, "subject"),
    (BATCH, {"customer": "acme", "features": ["agent"], "instance": FP1}, "instance"),
    (BATCH, {"customer": "acme", "features": ["editor"], "tenant": TE1}, "tenant"),
    (BATCH, {"customer": "acme", "features": ["f" * 64]}, "features[0]"),
    ("/v1/customers", {"key": "c" * (MAX_KEY + 1), "name": "C"}, "key"),
    ("/v1/customers/acme/tenants", {"key": TE1}, "key"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "body", "path"), TOO_LONG)
async def test_one_character_too_many_is_a_422_naming_the_field_on_every_route(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str, route: str, body: dict, path: str
) -> None:
    response = await client.post(route, json=body, headers=admin)
    assert _paths(response) == [path]


async def test_the_longest_valid_identifiers_go_through_allocation_and_check(
    client: httpx.AsyncClient, admin: dict[str, str], acme: str
) -> None:
    tenant = await client.post(
        "/v1/customers/acme/tenants", json={"key": TENANT, "quotas": {"seats": 2}}, headers=admin
    )
    assert tenant.status_code == 201, tenant.text
    seat = await client.post(
        "/v1/customers/acme/seats", json={"subject": SUBJECT, "tenant": TENANT}, headers=admin
    )
    assert seat.status_code == 201, seat.text
    instance = await client.post(
        "/v1/customers/acme/instances",
        json={"fingerprint": FINGERPRINT, "kind": "vm", "environment": "e" * 128},
        headers=admin,
    )
    assert instance.status_code == 201, instance.text

    check = await client.post(
        "/v1/check",
        json={"customer": "acme", "feature": "editor", "subject": SUBJECT, "tenant": TENANT},
        headers=admin,
    )
    assert check.status_code == 200, check.text
    assert check.json()["allowed"] is True, check.json()
    agent = await client.post(
        "/v1/check",
        json={"customer": "acme", "feature": "agent", "instance": FINGERPRINT},
        headers=admin,
    )
    assert agent.json()["allowed"] is True, agent.json()
    batch = await client.post(
        "/v1/check/batch",
        json={"customer": "acme", "features": ["editor", "agent"], "subject": SUBJECT,
              "instance": FINGERPRINT},
        headers=admin,
    )  # fmt: skip
    assert [d["allowed"] for d in batch.json()["decisions"]] == [True, True], batch.text


LONG_KEY = "k" * (MAX_KEY + 1)


@pytest.mark.parametrize(
    ("method", "url", "field"),
    [
        ("GET", f"/v1/customers/{LONG_KEY}", "key"),
        ("PATCH", f"/v1/customers/{LONG_KEY}", "key"),
        ("DELETE", f"/v1/customers/{LONG_KEY}", "key"),
        ("GET", f"/v1/customers/{LONG_KEY}/usage", "key"),
        ("POST", f"/v1/customers/{LONG_KEY}/seats", "key"),
        ("GET", f"/v1/customers/{LONG_KEY}/seats", "key"),
        ("POST", f"/v1/customers/{LONG_KEY}/instances", "key"),
        ("POST", f"/v1/customers/{LONG_KEY}/sessions", "key"),
        ("GET", f"/v1/customers/{LONG_KEY}/contracts", "key"),
        ("GET", f"/v1/customers/{LONG_KEY}/tenants", "key"),
        ("GET", f"/v1/customers/acme/tenants/{TE1}", "tenant"),
        ("DELETE", f"/v1/customers/acme/seats/{SU1}", "subject"),
    ],
)
async def test_an_identifier_in_the_path_is_held_to_the_same_definition(
    client: httpx.AsyncClient, admin: dict[str, str], method: str, url: str, field: str
) -> None:
    """Over-long in the path is a 422 naming it, as in a body; not a 404 "does not exist"."""
    body = {"subject": "u1"} if method in ("POST", "PATCH") else None
    answer = await client.request(method, url, json=body, headers=admin)
    assert any(p.endswith(field) for p in _paths(answer)), answer.text
