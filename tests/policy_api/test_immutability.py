"""Invariant 4 in the database: a published version never changes and only a published
version can be active — whoever writes the SQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.exc import IntegrityError

from tests.factories.policies import create_policy, published_policy
from tests.policy_api.helpers import execute, pointer


@pytest.mark.parametrize(
    "sql",
    [
        'UPDATE policy_versions SET document = \'{"currency": "EUR"}\' WHERE version = 1',
        "UPDATE policy_versions SET digest = 'forged' WHERE version = 1",
        "UPDATE policy_versions SET source = 'currency: EUR' WHERE version = 1",
        "UPDATE policy_versions SET status = 'draft' WHERE version = 1",
        "UPDATE policy_versions SET published_by = 'someone-else' WHERE version = 1",
    ],
)
async def test_a_published_version_cannot_be_updated(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], sql: str
) -> None:
    published = await published_policy(client, admin)
    with pytest.raises(IntegrityError, match="policy version 1 is published and cannot be changed"):
        await execute(app, sql)
    after = (await client.get("/v1/policies/1", headers=admin)).json()
    assert after["digest"] == published["digest"] and after["status"] == "published"
    assert after["document"]["currency"] == "USD"


async def test_a_published_version_cannot_be_deleted(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await published_policy(client, admin)
    with pytest.raises(IntegrityError, match="published and cannot be deleted"):
        await execute(app, "DELETE FROM policy_versions WHERE version = 1")
    assert (await client.get("/v1/policies/1", headers=admin)).status_code == 200


async def test_a_draft_is_not_frozen(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_policy(client, admin)
    await execute(app, "DELETE FROM policy_versions WHERE version = 1")
    assert (await client.get("/v1/policies/1", headers=admin)).status_code == 404


async def test_the_active_pointer_cannot_name_a_draft(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await published_policy(client, admin, variant="1")
    await create_policy(client, admin, variant="2")
    with pytest.raises(IntegrityError, match="policy version 2 is not published"):
        await execute(app, "UPDATE policy_state SET active_version = 2 WHERE id = 1")
    assert (await pointer(app)).active_version == 1


async def test_the_global_version_never_goes_back(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await published_policy(client, admin)
    with pytest.raises(IntegrityError, match="cannot go back"):
        await execute(app, "UPDATE policy_state SET global_version = 0 WHERE id = 1")
    assert (await pointer(app)).global_version == 1
