"""Test fixtures: real PostgreSQL and Redis, one database per xdist worker.

With ALLOTMENT_DATABASE_URL / ALLOTMENT_REDIS_URL set, tests use those servers: they create
their own database (`allotment_test_<worker>`) next to whatever is there and namespace every
Redis key and channel, so existing data is never touched. Without them, each test worker
starts its own embedded PostgreSQL and Redis under the system temp directory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from allotment import embedded
from allotment.app import create_app
from allotment.audit.models import GENESIS_HASH
from allotment.config import Settings
from allotment.db import Base, libpq_url, session_scope
from allotment.migrate import upgrade
from allotment.models import load_all
from allotment.seats import known as known_seat_limits

load_all()

# The signing keys' secret (allotment/signing/secret.py) for the test app and the CLI it runs;
# without it the service would write one into ./.allotment. tests/artifacts covers that path.
SIGNING_SECRET = "tests-signing-secret"


@dataclass(frozen=True)
class Stores:
    database_url: str
    redis_url: str
    namespace: str

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "redis_namespace": self.namespace,
            "log_level": "WARNING",
            # In process, httpx's ASGITransport (and schemathesis's) hand a response over
            # only once it has ended: a stream (GET /v1/stream) walked by the route tests
            # must end by itself, soon. tests/stream serves its apps over real HTTP.
            "stream_max_s": 0.2,
            "signing_secret": SIGNING_SECRET,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ALLOTMENT_DATABASE_URL": self.database_url,
            "ALLOTMENT_REDIS_URL": self.redis_url,
            "ALLOTMENT_REDIS_NAMESPACE": self.namespace,
            "ALLOTMENT_LOG_LEVEL": "WARNING",
            "ALLOTMENT_SIGNING_SECRET": SIGNING_SECRET,
        }


# One set of stores per process: clients/python/tests imports this fixture into its own
# conftest, and a test worker running both suites must not start (and drop) them twice.
_RUNNING: list[Stores] = []


@pytest.fixture(scope="session")
def stores() -> Iterator[Stores]:
    if _RUNNING:
        yield _RUNNING[0]
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    # One embedded data dir per checkout and worker: two clones never share a server.
    checkout = hashlib.sha1(str(Path(__file__).resolve().parent).encode()).hexdigest()[:8]
    data_dir = Path(tempfile.gettempdir()) / f"allotment-tests-{os.getuid()}-{checkout}" / worker
    data_dir.mkdir(parents=True, exist_ok=True)
    servers = embedded.start(
        Settings(
            database_url=os.environ.get("ALLOTMENT_DATABASE_URL") or None,
            redis_url=os.environ.get("ALLOTMENT_REDIS_URL") or None,
            data_dir=data_dir,
        )
    )
    base = make_url(libpq_url(servers.database_url))
    name = f"allotment_test_{worker}"
    admin = base.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = base.set(database=name).render_as_string(hide_password=False)
    upgrade(database_url)
    _RUNNING.append(
        Stores(
            database_url=database_url,
            redis_url=servers.redis_url,
            namespace=f"allotment-test-{worker}-{os.getpid()}",
        )
    )
    try:
        yield _RUNNING[0]
    finally:
        _RUNNING.clear()
        servers.stop()


@pytest.fixture(scope="session")
async def app(stores: Stores) -> AsyncIterator[object]:
    application = create_app(stores.settings())
    async with application.router.lifespan_context(application):
        yield application


async def reset(app: object) -> None:
    """Empty every table (fast enough per test), every cache, and the decision buffer."""
    await app.state.checker.decisions.flush()  # type: ignore[attr-defined]
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name != "audit_head")
    async with session_scope(app.state.sessionmaker) as session:  # type: ignore[attr-defined]
        await session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await session.execute(
            text("UPDATE audit_head SET last_id = 0, last_hash = :h"), {"h": GENESIS_HASH}
        )
    app.state.principals.clear()  # type: ignore[attr-defined]
    checker = app.state.checker  # type: ignore[attr-defined]
    checker.snapshots.clear()
    checker._last_catalog = None
    if checker.usage is not None:
        checker.usage._entries.clear()
    if checker.wallets is not None:
        checker.wallets.clear()
    known_seat_limits.clear()  # remembered for the one-round-trip seat assignment
    app.state.keyring.clear()  # type: ignore[attr-defined]  # the signing keys were truncated
    redis = app.state.redis  # type: ignore[attr-defined]
    stale = [k async for k in redis.scan_iter(match=checker.snapshots.keys.snapshot_pattern)]
    if stale:
        await redis.delete(*stale)


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    await reset(app)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
async def admin(app: object, client: httpx.AsyncClient) -> dict[str, str]:
    from tests.factories.auth import create_key

    return await create_key(app, scopes=["admin"])


@pytest.fixture
async def backend(app: object, client: httpx.AsyncClient) -> dict[str, str]:
    """A product backend's key (`check` scope)."""
    from tests.factories.auth import create_key

    return await create_key(app, scopes=["check"])


@pytest.fixture
async def finance(app: object, client: httpx.AsyncClient) -> dict[str, str]:
    from tests.factories.auth import create_key

    return await create_key(app, scopes=["finance"])


@pytest.fixture
async def team(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """acme on the demo `team` plan: 10 seats, burst 2 for 72h, 5 guests, 3 instance weight."""
    from tests.factories.contracts import create_contract
    from tests.factories.customers import create_customer
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    return "acme"
