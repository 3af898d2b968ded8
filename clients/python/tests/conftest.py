"""The SDK's tests run against the real service: uvicorn serving the app over HTTP in the
test loop (tests/stream/conftest.py's `serve`), on the test worker's PostgreSQL and Redis
(tests/conftest.py's `stores`), or as a separate process for the fault test.

Sync clients block: a test drives them from a worker thread (`asyncio.to_thread`) while the
loop serves. Each test makes its own customers (`fresh_key`), so tests share one server.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

GRACE_S = 7200  # artifacts keep granting access 2 h past `exp`, with a warning
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # `pytest clients/python/tests` from anywhere
    sys.path.insert(0, str(ROOT))

from tests.conftest import Stores, stores  # noqa: E402, F401 - the session's stores
from tests.factories.auth import create_key  # noqa: E402
from tests.factories.contracts import create_contract  # noqa: E402
from tests.factories.customers import create_customer  # noqa: E402
from tests.factories.policies_for_contracts import demo_document, publish_policy  # noqa: E402
from tests.stream.conftest import Served, serve  # noqa: E402


@dataclass
class Service:
    """A served app, an admin HTTP client on it, and a `check`-scoped key for the SDK."""

    served: Served
    admin: httpx.AsyncClient
    admin_headers: dict[str, str]
    key: str

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def app(self) -> Any:
        return self.served.app

    async def customer(self, *, plan: str = "team", **contract: Any) -> tuple[str, dict[str, Any]]:
        """A new customer with a contract on `plan`: (its key, the contract)."""
        key = fresh_key()
        await create_customer(self.admin, self.admin_headers, key=key)
        made = await create_contract(
            self.admin, self.admin_headers, customer=key, plan=plan, **contract
        )
        return key, made

    async def amend(self, contract: dict[str, Any], **fields: Any) -> dict[str, Any]:
        answer = await self.admin.patch(
            f"/v1/contracts/{contract['id']}",
            json=fields,
            headers={**self.admin_headers, "If-Match": str(contract["revision"])},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    async def scalar(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        from allotment.db import session_scope

        async with session_scope(self.app.state.sessionmaker) as session:
            return (await session.execute(text(sql), params)).scalar_one()


def fresh_key() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
async def service(stores: Stores) -> AsyncIterator[Service]:  # noqa: F811 - the fixture
    async with serve(stores, stream_heartbeat_s=0.5, artifact_grace_s=GRACE_S) as served:
        admin_headers = await create_key(served.app, scopes=["admin"])
        check_key = (await create_key(served.app, scopes=["check"]))["Authorization"][7:]
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as admin:
            # The demo catalog, active whatever earlier tests of this worker published.
            await publish_policy(admin, admin_headers, demo_document(), force=True)
            yield Service(served, admin, admin_headers, check_key)
