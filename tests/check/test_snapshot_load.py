"""SnapshotCache._load in one select: the contract and revision in force, and until when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from allotment.kit.clock import isoformat
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy


async def test_future_amendment_is_picked_at_its_boundary(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    contract = (await client.get("/v1/customers/acme/contracts", headers=admin)).json()["items"][0]
    boundary = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    amended = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"plan": "enterprise", "effective_at": isoformat(boundary)},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert amended.status_code == 200, amended.text

    cache = app.state.checker.snapshots
    now = datetime.now(UTC)
    snapshot, valid_until = await cache._load("acme", now)
    assert snapshot.contract is not None and snapshot.contract.id == contract["id"]
    assert snapshot.contract.revision == 1 and snapshot.contract.plan == "team"
    assert valid_until == boundary
    assert snapshot.policy_version == 1 and snapshot.catalog is not None

    later, until = await cache._load("acme", boundary)  # effective_at <= now: in force
    assert later.contract is not None and later.contract.revision == 2
    assert later.contract.plan == "enterprise" and until is None

    ghost, never = await cache._load("ghost", now)
    assert ghost.known is False and ghost.contract is None and never is None
    assert ghost.policy_version == 1

    # The pool's connections are back to transactions after an autocommit load.
    async with app.state.sessionmaker() as session:
        connection = await session.connection()
        assert (await connection.get_isolation_level()) != "AUTOCOMMIT"
