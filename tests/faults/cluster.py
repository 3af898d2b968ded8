"""A whole deployment a fault test owns: its own Redis, its own PostgreSQL, two API workers.

    Cluster.start(workdir, env=…)   redis-server + pgserver PostgreSQL (migrated) + two
                                    `uvicorn allotment.app:create_app --factory` processes
                                    on ports of their own, sharing both stores
    cluster.kill_redis() / start_redis()        SIGKILL, then the same port again
    cluster.stop_postgres() / start_postgres()  `pg_ctl stop -m fast`, then start again
    cluster.kill_worker(i) / respawn_worker(i)  SIGKILL one API process, then a new one on
                                                the same port

Nothing is mocked and nothing runs in the test's process but the clients: setup (policy,
customers, contracts) goes through the workers' HTTP API with an admin key minted straight
into the database, as `allotment api-keys create` would.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from allotment.auth import service as api_keys
from allotment.config import Settings
from allotment.db import create_engine, create_sessionmaker, libpq_url, session_scope
from allotment.migrate import upgrade
from tests.check.servers import PostgresServer, RedisServer, Worker, free_port
from tests.factories.auth import bearer
from tests.factories.policies_for_contracts import demo_document

WORKERS = 2
# What a worker must never log, whatever the fault: an unhandled exception is a 500.
TROUBLE = re.compile(r"Traceback|unhandled_exception|CRITICAL", re.IGNORECASE)


async def mint_key(database_url: str, scopes: list[str], name: str) -> dict[str, str]:
    settings = Settings(database_url=database_url, redis_url="redis://unused")
    engine = create_engine(database_url, settings)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            _, secret = await api_keys.create(session, name=name, scopes=scopes, actor="faults")
    finally:
        await engine.dispose()
    return bearer(secret)


def start_stores(workdir: Path) -> tuple[RedisServer, PostgresServer, str]:
    """A redis-server and a migrated PostgreSQL database under `workdir` (blocking)."""
    workdir.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(workdir / "redis")
    redis.start()
    try:
        postgres = PostgresServer(workdir / "pg")
    except BaseException:
        redis.kill()
        raise
    try:
        database_url = postgres.create_database("allotment")
        upgrade(database_url)
    except BaseException:
        redis.kill()
        postgres.close()
        raise
    return redis, postgres, database_url


@dataclass
class Cluster:
    workdir: Path
    redis: RedisServer
    postgres: PostgresServer
    database_url: str
    env: dict[str, str]
    workers: list[Worker]
    admin: dict[str, str] = field(default_factory=dict)
    backend: dict[str, str] = field(default_factory=dict)  # scope `check`: the load's key
    spawned: int = 0

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def start(cls, workdir: Path, env: dict[str, str] | None = None) -> Cluster:
        redis, postgres, database_url = await asyncio.to_thread(start_stores, workdir)
        try:
            worker_env = {
                **os.environ,
                "ALLOTMENT_DATABASE_URL": database_url,
                "ALLOTMENT_REDIS_URL": redis.url,
                "ALLOTMENT_REDIS_NAMESPACE": f"faults-{uuid.uuid4().hex[:8]}",
                "ALLOTMENT_LOG_LEVEL": "WARNING",
                **(env or {}),
            }
            cluster = cls(workdir, redis, postgres, database_url, worker_env, [])
            cluster.workers = [cluster._spawn(free_port()) for _ in range(WORKERS)]
            await asyncio.gather(*(worker.wait_ready() for worker in cluster.workers))
            cluster.admin = await mint_key(database_url, ["admin"], "faults-admin")
            cluster.backend = await mint_key(database_url, ["check"], "faults-load")
        except BaseException:
            if "cluster" in locals():
                for worker in cluster.workers:
                    worker.terminate()
            redis.kill()
            postgres.close()
            raise
        return cluster

    def _spawn(self, port: int) -> Worker:
        self.spawned += 1
        return Worker(self.env, port, self.workdir / f"worker-{self.spawned}-{port}.log")

    def close(self) -> None:
        for worker in self.workers:
            worker.terminate()
        self.redis.kill()
        self.postgres.close()

    @property
    def urls(self) -> list[str]:
        return [worker.base_url for worker in self.workers]

    @property
    def libpq_url(self) -> str:
        return libpq_url(self.database_url)

    # -- faults --------------------------------------------------------------------------

    def kill_redis(self) -> None:
        self.redis.kill()

    def start_redis(self) -> None:
        self.redis.start()

    def stop_postgres(self) -> None:
        try:
            self.postgres.stop()
        except subprocess.CalledProcessError as exc:
            raise AssertionError(f"pg_ctl stop failed ({exc}); {self._postgres_log()}") from exc

    def start_postgres(self) -> None:
        try:
            self.postgres.start()
        except subprocess.CalledProcessError as exc:
            raise AssertionError(f"pg_ctl start failed ({exc}); {self._postgres_log()}") from exc

    def _postgres_log(self) -> str:
        log = self.workdir / "pg" / "log"  # pgserver's server log: a file
        text = log.read_text(errors="replace") if log.is_file() else "(no log)"
        return "the server log ends:\n" + "\n".join(text.splitlines()[-30:])

    def kill_worker(self, index: int) -> None:
        """SIGKILL: no shutdown, no flush; its connections just vanish."""
        proc = self.workers[index].proc
        proc.kill()
        proc.wait(timeout=10)

    async def respawn_worker(self, index: int) -> float:
        """A fresh process on the dead one's port; returns the seconds until it was ready."""
        started = time.perf_counter()
        worker = self._spawn(self.workers[index].port)
        self.workers[index] = worker
        await worker.wait_ready()
        return time.perf_counter() - started

    # -- what the workers said -------------------------------------------------------------

    def logs(self) -> str:
        return "".join(
            path.read_text(errors="replace") for path in sorted(self.workdir.glob("worker-*.log"))
        )

    def trouble(self) -> list[str]:
        """Lines of the workers' logs that betray an unhandled error."""
        return [line for line in self.logs().splitlines() if TROUBLE.search(line)][:20]

    # -- setup through the API -------------------------------------------------------------

    async def setup(self, *, customers: dict[str, dict[str, Any]]) -> None:
        """Publish the demo policy; create each customer with a `team` contract and the
        given contract terms (e.g. {"seats": {"limit": 6}})."""
        async with httpx.AsyncClient(base_url=self.urls[0], headers=self.admin, timeout=30) as http:
            created = await http.post("/v1/policies", json=demo_document())
            assert created.status_code == 201, created.text
            version = created.json()["version"]
            published = await http.post(f"/v1/policies/{version}/publish")
            assert published.status_code == 200, published.text
            for key, terms in customers.items():
                made = await http.post("/v1/customers", json={"key": key, "name": key.title()})
                assert made.status_code == 201, made.text
                contract = await http.post(
                    f"/v1/customers/{key}/contracts",
                    json={
                        "plan": "team",
                        "kind": "standard",
                        "starts_at": "2020-01-01T00:00:00Z",
                        **terms,
                    },
                )
                assert contract.status_code == 201, contract.text

    async def audit_verify(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.urls[0], headers=self.admin, timeout=60) as http:
            response = await http.get("/v1/audit/verify")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]
