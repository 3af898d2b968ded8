"""Regression tests for the two bugs the fault tests found under load (both fixed).

1. A write whose connection is lost during its audit append answers 500, not 503.
   `db.driver()` hands out the raw psycopg connection, and `audit.service._append_pending`
   (every audited write) and the seat assignment (`seats.direct`) run statements on it; a lost
   connection there raises `psycopg.OperationalError` (e.g. `AdminShutdown`), which is not
   SQLAlchemy's `OperationalError`, so `db.transaction` does not turn it into a 503.
   Under load: test_postgres_stopped.py, writes in flight while `pg_ctl stop -m fast` runs.

2. `POST /v1/check {consume}` answers from an ordinary check when its own snapshot read
   finds nothing (`check/consume.py`: "the store is down: an ordinary (denying) check"),
   although PostgreSQL is reachable (the Idempotency-Key lock was just taken on it):
   the answer is committed as the key's stored response — a transient `outage_default`
   denial replayed for 24 h, or (when a concurrent load fills the cache meanwhile, as seen
   under load right after PostgreSQL returned) `allowed: true` with nothing consumed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from allotment.app import create_app
from allotment.config import Settings
from allotment.db import libpq_url
from allotment.kit.keyspace import Keyspace
from tests.factories.policies_for_contracts import demo_document
from tests.faults.cluster import mint_key, start_stores

NAMESPACE = "faults-known-bugs"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient, str]]:
    """An in-process app on stores of its own, with the demo policy and customer acme."""
    redis, postgres, database_url = await asyncio.to_thread(start_stores, tmp_path)
    try:
        settings = Settings(
            database_url=database_url,
            redis_url=redis.url,
            redis_namespace=NAMESPACE,
            log_level="WARNING",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            admin = await mint_key(database_url, ["admin"], "bugs")
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=admin
            ) as http:
                created = await http.post("/v1/policies", json=demo_document())
                version = created.json()["version"]
                assert (await http.post(f"/v1/policies/{version}/publish")).status_code == 200
                made = await http.post("/v1/customers", json={"key": "acme", "name": "Acme"})
                assert made.status_code == 201, made.text
                contract = await http.post(
                    "/v1/customers/acme/contracts",
                    json={"plan": "team", "starts_at": "2020-01-01T00:00:00Z"},
                )
                assert contract.status_code == 201, contract.text
                yield app, http, libpq_url(database_url)
    finally:
        redis.kill()
        postgres.close()


async def test_connection_lost_during_the_audit_append_is_a_503(service: Any) -> None:
    app, http, database_url = service
    async with await psycopg.AsyncConnection.connect(database_url) as chain:
        # Hold the audit chain's lock, so the write waits inside its audit append.
        await chain.execute("SELECT * FROM audit_head WHERE id = 1 FOR UPDATE")
        holder = chain.info.backend_pid
        write = asyncio.create_task(http.post("/v1/customers/acme/seats", json={"subject": "ann"}))
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            waiting: list[Any] = []
            for _ in range(400):
                # Blocked by the chain lock's holder (the append runs inside the seat function,
                # so the waiting statement's text need not name audit_head).
                cursor = await admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND %s = ANY(pg_blocking_pids(pid))",
                    (holder,),
                )
                waiting = await cursor.fetchall()
                if waiting:
                    break
                await asyncio.sleep(0.025)
            assert waiting, "the write never waited on the chain lock"
            # Its connection is lost (as in `pg_ctl stop -m fast`, a failover, a network cut).
            await admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
        response = await write
        await chain.rollback()
    # Today: 500 internal-error (psycopg.errors.AdminShutdown unhandled).
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0


async def test_consume_never_stores_an_answer_it_did_not_decide_by_consuming(
    service: Any,
) -> None:
    app, http, database_url = service
    backend = await mint_key(str(app.state.settings.database_url), ["check"], "bugs-check")
    http.headers.update(backend)
    warm = await http.post("/v1/check", json={"customer": "acme", "feature": "api"})
    assert warm.json()["reason"] == "ok"
    snapshots = app.state.checker.snapshots

    async def forget_acme() -> None:
        """As right after a failed snapshot load: nothing cached for acme, and the store
        marked down moments ago (loads are not retried for STORE_RETRY_S). PostgreSQL
        itself is up."""
        snapshots._l1.clear()
        await app.state.redis.delete(Keyspace(NAMESPACE).snapshot("acme"))
        snapshots.store_down_at = time.monotonic()

    body = {"customer": "acme", "feature": "api", "consume": 1}
    answers = []
    # (a) The fallback check finds nothing either: a transient outage_default denial.
    await forget_acme()
    answers.append(await http.post("/v1/check", json=body, headers={"Idempotency-Key": "a"}))
    # (b) A concurrent check's load fills the cache while consume awaits Redis (L2): the
    # fallback check then allows — without consuming.
    await forget_acme()
    original = snapshots._l2_stale

    async def l2_then_a_concurrent_load(customer: str, now: Any) -> Any:
        found = await original(customer, now)
        snapshots.store_down_at = None
        snapshot, valid_until = await snapshots._load(customer, now)
        snapshots._store(customer, snapshot, valid_until)
        snapshots._l2_stale = original
        return found

    snapshots._l2_stale = l2_then_a_concurrent_load
    answers.append(await http.post("/v1/check", json=body, headers={"Idempotency-Key": "b"}))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM usage_event_ids WHERE source = 'allotment:consume'"
        )
        consumed = (await cursor.fetchone())[0]  # type: ignore[index]
        cursor = await conn.execute("SELECT key FROM idempotency_keys ORDER BY key")
        stored = [row[0] for row in await cursor.fetchall()]
    # Today: (a) 200 outage_default stored under "a"; (b) 200 allowed, no `consumed`, no
    # event, stored under "b". A consume is decided (allowed and counted, or refused by
    # its limit) or it is a retryable failure (503); only a decided one is stored.
    decided = [_decided(answer) for answer in answers]
    for answer, ok in zip(answers, decided, strict=True):
        assert ok or answer.status_code == 503, answer.json()
    allowed = sum(1 for a in answers if a.status_code == 200 and a.json()["allowed"])
    assert consumed == allowed
    assert stored == [k for k, ok in zip("ab", decided, strict=True) if ok]


def _decided(answer: httpx.Response) -> bool:
    if answer.status_code != 200:
        return False
    body = answer.json()
    if body["allowed"]:
        return bool(body.get("consumed") == 1)
    return bool(body["reason"] != "outage_default")
