"""`load_catalog`: how other domains read the active or a pinned policy version."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from allotment.db import session_scope
from allotment.errors import Conflict, NotFound
from allotment.policy import catalog_cache
from allotment.policy import service as policies
from tests.factories.policies import create_policy, policy_document, published_policy


async def load(app: Any, **kw: Any) -> Any:
    async with session_scope(app.state.sessionmaker) as session:
        return await policies.load_catalog(session, **kw)


async def test_nothing_published_is_a_conflict_that_says_what_to_do(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_policy(client, admin)  # a draft is not enough
    with pytest.raises(policies.NoPublishedPolicy) as raised:
        await load(app)
    assert isinstance(raised.value, Conflict)
    assert raised.value.status == 409 and raised.value.type == "no-published-policy"
    assert "publish" in raised.value.message.lower()


async def test_active_catalog_follows_publish_and_rollback(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await published_policy(client, admin)
    version, catalog = await load(app)
    assert version == 1
    assert catalog.plans["enterprise"].features >= {"sso", "audit_log", "reports"}
    assert catalog.plans["enterprise"].seats.limit == 100

    document = policy_document()
    document["plans"]["team"]["seats"]["limit"] = 25
    await published_policy(client, admin, document=document)
    version, catalog = await load(app)
    assert version == 2 and catalog.plans["team"].seats.limit == 25

    await client.post("/v1/policies/rollback", json={"to_version": 1}, headers=admin)
    version, catalog = await load(app)
    assert version == 1 and catalog.plans["team"].seats.limit == 10


async def test_pinned_version_and_missing_version(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await published_policy(client, admin, variant="1")
    await published_policy(client, admin, variant="2")
    version, catalog = await load(app, version=1)
    assert version == 1 and catalog.features["reports"].description == "variant 1"
    with pytest.raises(NotFound):
        await load(app, version=7)


async def test_a_draft_loads_unless_published_only(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    draft = await create_policy(client, admin)
    version, catalog = await load(app, version=draft["version"])
    assert version == draft["version"] and "team" in catalog.plans
    with pytest.raises(policies.PolicyNotPublished):
        await load(app, version=draft["version"], published_only=True)


async def test_each_version_is_compiled_once(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    published = await published_policy(client, admin, variant="cache")
    compiled: list[int] = []
    original = catalog_cache._compile_stored

    def counting(number: int, document: dict[str, Any]) -> Any:
        compiled.append(number)
        return original(number, document)

    monkeypatch.setattr(catalog_cache, "_compile_stored", counting)
    first = await load(app)
    second = await load(app, version=published["version"])
    assert first[1] is second[1]
    assert compiled in ([], [published["version"]])  # compiled at most once, ever
    assert (published["version"], published["digest"]) in catalog_cache.cached_versions()
    assert first[1].digest == published["digest"]
