"""A usage read while PostgreSQL is stopped: a 503, never a 422 blaming the meter.

The operator's trial (issue 23): during a primary outage, `GET /v1/customers/{key}/usage`
of a customer with no cached snapshot answered 422 "The request names no meter 'api_calls'
in the customer's policy version": the meter is judged from the customer's snapshot, and
with the store down there was none. The database is really stopped here (its own pgserver
PostgreSQL), as in tests/check/test_degraded.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from allotment.app import create_app
from allotment.migrate import upgrade
from tests.check.servers import PostgresServer, eventually
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import metered_document


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path / "pg")
    try:
        yield server
    finally:
        server.close()


async def test_a_usage_read_with_the_database_stopped_is_a_503(
    stores: Any, postgres: PostgresServer
) -> None:
    url = postgres.create_database("allotment")
    upgrade(url)
    settings = stores.settings(
        database_url=url, redis_namespace=f"{stores.namespace}-usage-down-{uuid.uuid4().hex[:8]}"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            admin = await create_key(app, scopes=["admin"])
            await publish_policy(http, admin, metered_document())
            for key in ("acme", "beta"):
                await create_customer(http, admin, key=key)
                await create_contract(http, admin, customer=key, plan="team")

            async def usage(key: str) -> httpx.Response:
                return await http.get(
                    f"/v1/customers/{key}/usage", params={"meter": "api_calls"}, headers=admin
                )

            assert (await usage("acme")).status_code == 200  # the key is verified and cached
            app.state.checker.snapshots.clear()  # no customer's snapshot is cached

            postgres.stop()
            for key in ("beta", "acme"):
                down = await usage(key)
                assert down.status_code == 503, down.text
                assert down.headers["content-type"] == "application/problem+json"
                assert int(down.headers["retry-after"]) > 0
                problem = down.json()
                assert problem["type"].endswith("/service-unavailable"), problem
                assert problem["detail"].startswith("The database is unavailable"), problem
            # A cached customer whose meter is unknown is still the request's fault: 422.
            postgres.start()

            async def back() -> bool:
                return (await usage("beta")).status_code == 200

            await eventually(back, within=30, interval=0.1)
            postgres.stop()
            unknown = await http.get(
                "/v1/customers/beta/usage", params={"meter": "nope"}, headers=admin
            )
            assert unknown.status_code == 422, unknown.text
            postgres.start()
