from __future__ import annotations

import copy
from typing import Any

import httpx
import yaml

TEAM_POLICY: dict[str, Any] = {
    "currency": "USD",
    "features": {
        "reports": {},
        "editor": {"seat": "required"},
        "api": {"meter": "api_calls"},
        "audit_log": {},
        "sso": {"requires": ["audit_log"]},
    },
    "meters": {"api_calls": {"event_type": "api.call", "aggregation": "sum", "property": "count"}},
    "plans": {
        "team": {
            "attributes": {"edition": "team"},
            "features": ["reports", "editor", "api"],
            "seats": {"limit": 10, "burst": {"extra": 2, "window": "72h"}},
            "instances": {"limit": 3},
            "limits": {"api_calls": {"limit": 100000}},
            "price": {"base": "500.00", "seat": {"unit": "20.00", "included": 5}},
        },
        "enterprise": {
            "extends": "team",
            "features": ["+sso", "+audit_log"],
            "seats": {"limit": 100},
        },
    },
    "addons": {"audit_pack": {"features": ["audit_log"], "price": "100.00"}},
}


def policy_document(*, variant: str | None = None, **sections: Any) -> dict[str, Any]:
    """A fresh valid policy; `variant` gives otherwise equal documents distinct digests."""
    document = copy.deepcopy(TEAM_POLICY)
    document.update(copy.deepcopy(sections))
    if variant is not None:
        document["features"]["reports"] = {"description": f"variant {variant}"}
    return document


def policy_yaml(document: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(document or policy_document(), sort_keys=False)


async def create_policy(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    document: dict[str, Any] | None = None,
    variant: str | None = None,
    expect: int = 201,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/policies",
        json=document if document is not None else policy_document(variant=variant),
        headers=headers,
    )
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]


async def publish_policy(
    client: httpx.AsyncClient, headers: dict[str, str], version: int, *, force: bool = False
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/policies/{version}/publish",
        params={"force": "true"} if force else {},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def published_policy(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    document: dict[str, Any] | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """Create and publish a policy version; returns the published version."""
    created = await create_policy(client, headers, document=document, variant=variant)
    return await publish_policy(client, headers, created["version"])
